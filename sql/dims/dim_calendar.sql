{{ config(materialized='table', tags=['dims']) }}
-- One row per date, in whole years from 2024 to 2030 at least, and further back or on as far as
-- the data's times reach (plus a year after the latest): whether it is a working day (weekdays,
-- minus holidays, plus compensatory working Saturdays) and a running count of working days, so
-- that working days between two dates are a subtraction.
--
-- The data's times are those the index judges with: dossiers (submitted, received, due, ended),
-- petitions (first received) and the catalogue's dates. A time before 2000 or from 2050 on (vars
-- earliest_real_time, latest_real_time in dbt_project.yml) is taken for a placeholder (a `99991231…` sentinel, a zeroed date), not a date to plan the
-- calendar around: it is kept in the record as it came, listed by the warning test
-- records_with_times_out_of_range, and falls in no period.

with

-- Each time column's earliest and latest plausible value (aggregates over columns: no row of
-- the dossiers is copied).
data_times as (
    select
        least(
            min(submitted_at) filter (where submitted_at >= timestamp '{{ var('earliest_real_time') }}'),
            min(received_at) filter (where received_at >= timestamp '{{ var('earliest_real_time') }}'),
            min(due_at) filter (where due_at >= timestamp '{{ var('earliest_real_time') }}'),
            min(processed_at) filter (where processed_at >= timestamp '{{ var('earliest_real_time') }}'),
            min(returned_at) filter (where returned_at >= timestamp '{{ var('earliest_real_time') }}'),
            min(refused_at) filter (where refused_at >= timestamp '{{ var('earliest_real_time') }}')
        ) as first_time,
        greatest(
            max(submitted_at) filter (where submitted_at < timestamp '{{ var('latest_real_time') }}'),
            max(received_at) filter (where received_at < timestamp '{{ var('latest_real_time') }}'),
            max(due_at) filter (where due_at < timestamp '{{ var('latest_real_time') }}'),
            max(processed_at) filter (where processed_at < timestamp '{{ var('latest_real_time') }}'),
            max(returned_at) filter (where returned_at < timestamp '{{ var('latest_real_time') }}'),
            max(refused_at) filter (where refused_at < timestamp '{{ var('latest_real_time') }}')
        ) as last_time
    from {{ ref('stg_portal__dossiers') }}
    union all
    select
        min(first_received_at) filter (where first_received_at >= timestamp '{{ var('earliest_real_time') }}'),
        max(first_received_at) filter (where first_received_at < timestamp '{{ var('latest_real_time') }}')
    from {{ ref('stg_reporting__petitions') }}
    union all
    select
        cast(least(
            min(announced_on) filter (where announced_on >= date '{{ var('earliest_real_time') }}'),
            min(legal_basis_effective_on) filter (where legal_basis_effective_on >= date '{{ var('earliest_real_time') }}'),
            min(posted_on) filter (where posted_on >= date '{{ var('earliest_real_time') }}')
        ) as timestamp),
        cast(greatest(
            max(announced_on) filter (where announced_on < date '{{ var('latest_real_time') }}'),
            max(legal_basis_effective_on) filter (where legal_basis_effective_on < date '{{ var('latest_real_time') }}'),
            max(posted_on) filter (where posted_on < date '{{ var('latest_real_time') }}')
        ) as timestamp)
    from {{ ref('stg_catalogue__procedures') }}
),

bounds as (
    select
        least(date '2024-01-01', cast(date_trunc('year', min(first_time)) as date)) as first_day,
        greatest(date '2031-01-01', cast(date_trunc('year', max(last_time)) + interval 2 year as date)) as day_after
    from data_times
),

days as (
    select cast(d as date) as calendar_date
    from bounds, range(bounds.first_day, bounds.day_after, interval 1 day) as t(d)
),

special as (
    select * from {{ ref('stg_calendar__days') }}
),

flagged as (
    select
        days.calendar_date,
        isodow(days.calendar_date) as iso_weekday,
        special.day_kind,
        special.day_name,
        case
            when special.day_kind = 'holiday' then false
            when special.day_kind = 'compensatory_workday' then true
            else isodow(days.calendar_date) <= 5
        end as is_working_day
    from days
    left join special on special.calendar_date = days.calendar_date
)

select
    *,
    -- INTEGER, not the HUGEINT a sum gives: it flows into the facts' day counts, which BI tools
    -- read more readily as plain integers
    cast(sum(case when is_working_day then 1 else 0 end) over (order by calendar_date) as integer) as working_day_number
from flagged

{{ config(materialized='table', tags=['dims']) }}
-- One row per date from 2024-01-01 to 2030-12-31: whether it is a working day (weekdays, minus
-- holidays, plus compensatory working Saturdays) and a running count of working days, so that
-- working days between two dates are a subtraction.

with

days as (
    select cast(d as date) as calendar_date
    from range(date '2024-01-01', date '2031-01-01', interval 1 day) as t(d)
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

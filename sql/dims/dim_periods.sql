{{ config(materialized='table', tags=['dims']) }}
-- One row per reporting period (period) over the years dim_calendar covers (2024 to 2030 at
-- least, further where the data's times reach): months (2026-08), quarters (2026-Q3) and years
-- (2026), with their start and end as Vietnamese wall-clock times (end exclusive).

with

months as (
    select cast(m as date) as month_start
    from (select min(calendar_date) as first_day, max(calendar_date) as last_day from {{ ref('dim_calendar') }}) as b,
        range(b.first_day, cast(b.last_day + 1 as date), interval 1 month) as t(m)
),

periods as (
    select
        strftime(month_start, '%Y-%m') as period,
        'month' as period_type,
        month_start as starts_on,
        cast(month_start + interval 1 month as date) as ends_before
    from months
    union all
    select
        strftime(month_start, '%Y') || '-Q' || cast(quarter(month_start) as varchar),
        'quarter',
        month_start,
        cast(month_start + interval 3 month as date)
    from months
    where month(month_start) in (1, 4, 7, 10)
    union all
    select
        strftime(month_start, '%Y'),
        'year',
        month_start,
        cast(month_start + interval 1 year as date)
    from months
    where month(month_start) = 1
)

select
    period,
    period_type,
    starts_on,
    ends_before,
    cast(starts_on as timestamp) as starts_at,
    cast(ends_before as timestamp) as ends_at,
    -- the period of the same type just before (2026-08 → 2026-07, 2026-Q1 → 2025-Q4, 2026 → 2025)
    case period_type
        when 'month' then strftime(starts_on - interval 1 month, '%Y-%m')
        when 'quarter' then strftime(starts_on - interval 3 month, '%Y') || '-Q' || cast(quarter(starts_on - interval 3 month) as varchar)
        else strftime(starts_on - interval 1 year, '%Y')
    end as previous_period
from periods

{{ config(materialized='table', tags=['dims']) }}
-- One row per working day (working_day_number): its date. The one place a deadline "n working
-- days after" a time is read from (SPEC §3.6, §4): the working day numbered
-- dim_calendar.working_day_number of the start's date plus n, at the start's time of day. A day
-- off carries the number of the working day before it, so a start on a day off counts from
-- that working day (a Saturday receipt is due as a Friday one). Working days between two dates
-- are the difference of their dim_calendar.working_day_number.
select working_day_number, calendar_date
from {{ ref('dim_calendar') }}
where is_working_day

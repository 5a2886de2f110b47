{{ config(materialized='table', tags=['index']) }}
-- One row per period (period): the day whose state the period is judged with (its last day, or
-- the data watermark's day while it runs: int_period_judgement.judged_on). Apart from the
-- judging moment, which moves at every landing, so that what depends on the day alone (the
-- unit tree of int_units_by_period and the roll-up) is kept by incremental builds until the
-- watermark reaches another day.

select period, judged_on
from {{ ref('int_period_judgement') }}

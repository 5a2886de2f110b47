{{ config(materialized='table', tags=['index']) }}
-- One row per period × unit that existed by the day the period is judged with (period,
-- unit_id): the unit's last version begun by then, and whether it is valid that day
-- (`is_valid_at_end`). That day (int_period_judgement.judged_on) is the period's last day, or
-- the data watermark's day while the period runs: a running period keeps the tree of the moment
-- it is judged at, not one the registry announces for later (a unit closing next month is still
-- in this month's tree).
-- The one place "a unit valid at the period's end" is decided: the roll-up
-- (int_units_rolled_up_by_period), the counts (int_indicator_counts), the mart
-- (mart_index_unit_period) and its test read it. A period keeps the structure of its own time:
-- a unit renamed or moved during the period is its version valid at the end.

select
    p.period,
    p.judged_on,
    u.unit_id,
    u.valid_from,
    u.valid_to,
    u.unit_name,
    u.parent_unit_id,
    u.unit_level,
    u.unit_kind,
    u.successor_unit_ids,
    u.valid_to is null or u.valid_to >= p.judged_on as is_valid_at_end
from {{ ref('int_period_judgement') }} as p
inner join {{ ref('dim_units') }} as u on u.valid_from <= p.judged_on
qualify row_number() over (partition by p.period, u.unit_id order by u.valid_from desc) = 1

{{ config(materialized='table', tags=['index']) }}
-- One row per period × unit that existed by the day the period is judged with (period,
-- unit_id): the unit's last version begun by then, and whether it is valid that day
-- (`is_valid_at_end`). That day (int_period_days.judged_on) is the period's last day, or
-- the data watermark's day while the period runs: a running period keeps the tree of the moment
-- it is judged at, not one the registry announces for later (a unit closing next month is still
-- in this month's tree).
-- The one place "a unit valid at the period's end" is decided: the roll-up
-- (int_units_rolled_up_by_period), the counts (int_indicator_counts), the mart
-- (mart_index_unit_period) and its test read it. A period keeps the structure of its own time:
-- a unit renamed or moved during the period is its version valid at the end.

-- (an as-of join: for each period and unit, the version with the latest start by that day)
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
from (
    select pe.period, pe.judged_on, k.unit_id
    from {{ ref('int_period_days') }} as pe
    cross join (select distinct unit_id from {{ ref('dim_units') }}) as k
) as p
asof inner join {{ ref('dim_units') }} as u
    on u.unit_id = p.unit_id and p.judged_on >= u.valid_from

{{ config(materialized='table', tags=['index']) }}
-- One row per period × unit that existed by the period's end (period, unit_id): the unit's last
-- version begun by then, and whether it is valid on the period's last day (`is_valid_at_end`).
-- The one place "a unit valid at the period's end" is decided: the roll-up
-- (int_units_rolled_up_by_period), the counts (int_indicator_counts), the mart
-- (mart_index_unit_period) and its test read it. A period keeps the structure of its own time:
-- a unit renamed or moved during the period is its version valid at the end.

select
    p.period,
    cast(p.ends_before - 1 as date) as last_day,
    u.unit_id,
    u.valid_from,
    u.valid_to,
    u.unit_name,
    u.parent_unit_id,
    u.unit_level,
    u.unit_kind,
    u.successor_unit_ids,
    u.valid_to is null or u.valid_to >= cast(p.ends_before - 1 as date) as is_valid_at_end
from {{ ref('dim_periods') }} as p
inner join {{ ref('dim_units') }} as u on u.valid_from < p.ends_before
qualify row_number() over (partition by p.period, u.unit_id order by u.valid_from desc) = 1

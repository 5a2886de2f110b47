{{ config(materialized='table', tags=['index']) }}
-- One row per period × unit × roll-up unit: every unit that existed by the period's end (a
-- closed unit's dossiers can still finish after it ended), mapped to the unit that carries its
-- records at the period's end (`distance` 0) and to that unit's ancestors in the tree valid at
-- the period's end. A period keeps the structure of its own time; "the period's end" is the
-- day it is judged with (int_units_by_period: its last day, or the data watermark's day while
-- it runs).
--
-- The carrier (docs/methodology.md, "Which unit a record counts for"): a unit with a version
-- valid at the period's end carries its own records. Otherwise its last version begun by then
-- decides, one step at a time until a unit valid at the period's end is reached:
--   * exactly one successor (a renaming, a merger, a team becoming a base unit): the successor;
--   * no successor (the unit closed), or a successor the registry does not know by then: the
--     version's parent;
--   * several successors (a split, as the 2025 regions into provinces): the version's parent.
--     A record of the split unit itself has no unambiguous owner among the successors, so it
--     counts at the level above, where it is unambiguous; the warning test
--     records_without_an_unambiguous_owner lists such records. A record of a unit below the
--     split (a team whose own succession is one-to-one) follows its own line and is not one.
-- Each step is a function of the unit and the period, so the carrier is unique: no tie to
-- break. A chain that reaches no valid unit (a top unit closed with no successor, or a cycle)
-- leaves the unit without a carrier; the data test root_counts_equal_the_facts then fails.
-- `route` says how the carrier was reached ('own', or the steps: 'successor', 'closed',
-- 'split').

with recursive

-- Each unit that existed by each period's end, with its last version begun by then and whether
-- it is valid at the period's end.
existed as (
    select period, unit_id, parent_unit_id, successor_unit_ids, is_valid_at_end as is_valid
    from {{ ref('int_units_by_period') }}
),

-- One step from a unit not valid at the period's end.
steps as (
    select
        e.period,
        e.unit_id,
        case
            when len(e.successor_unit_ids) = 1 and s.unit_id is not null then s.unit_id
            else e.parent_unit_id
        end as next_unit_id,
        case
            when len(e.successor_unit_ids) = 1 and s.unit_id is not null then 'successor'
            when len(e.successor_unit_ids) > 1 then 'split'
            else 'closed'
        end as how
    from existed as e
    left join existed as s on s.period = e.period and s.unit_id = e.successor_unit_ids[1]
    where not e.is_valid
),

-- Chains of any length (a unit can be reorganised more than once), each unit at most once per
-- chain (a cycle in the registry ends the chain).
chain(period, unit_id, carrier_id, route, path) as (
    select period, unit_id, unit_id, []::varchar[], [unit_id] from existed
    union all
    select c.period, c.unit_id, s.next_unit_id, list_append(c.route, s.how), list_append(c.path, s.next_unit_id)
    from chain as c
    inner join steps as s on s.period = c.period and s.unit_id = c.carrier_id
    where s.next_unit_id is not null and not list_contains(c.path, s.next_unit_id)
),

carrier as (
    select c.period, c.unit_id, c.carrier_id, c.route
    from chain as c
    inner join existed as v on v.period = c.period and v.unit_id = c.carrier_id and v.is_valid
),

tree as (
    select period, unit_id, parent_unit_id
    from existed
    where is_valid
),

-- The carrier and its ancestors in the tree valid at the period's end, at any depth (each unit
-- at most once: a cycle in the registry ends the climb). A parent no longer valid then (the
-- registry closed or reorganised it without moving its children) is passed through as its own
-- records would be: to its carrier.
levels(period, unit_id, rollup_unit_id, distance, route, path) as (
    select c.period, c.unit_id, c.carrier_id, 0, c.route, [c.carrier_id]
    from carrier as c
    union all
    select l.period, l.unit_id, pc.carrier_id, l.distance + 1, l.route, list_append(l.path, pc.carrier_id)
    from levels as l
    inner join tree as t on t.period = l.period and t.unit_id = l.rollup_unit_id
    inner join carrier as pc on pc.period = l.period and pc.unit_id = t.parent_unit_id
    where not list_contains(l.path, pc.carrier_id)
)

select
    period,
    unit_id,
    rollup_unit_id,
    distance,
    case when len(route) = 0 then 'own' else array_to_string(route, ' > ') end as route
from levels

{{ config(materialized='table', tags=['index']) }}
-- One row per period × unit × roll-up unit: every unit that existed by the period's end (a
-- dissolved unit's dossiers can still finish after it ended), mapped to the unit that carries
-- its records at the period's end (following successors across a reorganisation; the first
-- successor when there are several) and to that unit's ancestors in the tree valid at the
-- period's end. A period keeps the structure of its own time.

with recursive

periods as (
    select period, starts_on, ends_before, cast(ends_before - 1 as date) as last_day
    from {{ ref('dim_periods') }}
),

units as (
    select * from {{ ref('dim_units') }}
),

active as (
    select p.period, p.last_day, u.unit_id
    from periods as p
    inner join units as u
        on u.valid_from <= p.last_day
),

-- Successor chains of any length (a unit can be reorganised more than once), each unit at most
-- once per chain (a cycle in the registry ends the chain).
chain(period, last_day, unit_id, carrier_id, path) as (
    select period, last_day, unit_id, unit_id, [unit_id] from active
    union all
    select c.period, c.last_day, c.unit_id, u.successor_unit_ids[1], list_append(c.path, u.successor_unit_ids[1])
    from chain as c
    inner join units as u
        on u.unit_id = c.carrier_id
        and u.valid_to is not null
        and u.valid_to < c.last_day
        and len(u.successor_unit_ids) > 0
    where not list_contains(c.path, u.successor_unit_ids[1])
),

carrier as (
    select period, last_day, unit_id, carrier_id
    from chain
    qualify row_number() over (partition by period, unit_id order by len(path) desc) = 1
),

tree as (
    select p.period, u.unit_id, u.parent_unit_id
    from periods as p
    inner join units as u
        on u.valid_from <= p.last_day and (u.valid_to is null or u.valid_to >= p.last_day)
),

-- The carrier and its ancestors in the tree valid at the period's end, at any depth (each unit
-- at most once: a cycle in the registry ends the climb).
levels(period, unit_id, rollup_unit_id, distance, path) as (
    select c.period, c.unit_id, c.carrier_id, 0, [c.carrier_id]
    from carrier as c
    union all
    select l.period, l.unit_id, t.parent_unit_id, l.distance + 1, list_append(l.path, t.parent_unit_id)
    from levels as l
    inner join tree as t on t.period = l.period and t.unit_id = l.rollup_unit_id
    where t.parent_unit_id is not null and not list_contains(l.path, t.parent_unit_id)
)

select distinct period, unit_id, rollup_unit_id, distance from levels

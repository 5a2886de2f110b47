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

chain(period, last_day, unit_id, carrier_id, depth) as (
    select period, last_day, unit_id, unit_id, 0 from active
    union all
    select c.period, c.last_day, c.unit_id, u.successor_unit_ids[1], c.depth + 1
    from chain as c
    inner join units as u
        on u.unit_id = c.carrier_id
        and u.valid_to is not null
        and u.valid_to < c.last_day
        and len(u.successor_unit_ids) > 0
    where c.depth < 4
),

carrier as (
    select period, last_day, unit_id, carrier_id
    from chain
    qualify row_number() over (partition by period, unit_id order by depth desc) = 1
),

tree as (
    select p.period, u.unit_id, u.parent_unit_id
    from periods as p
    inner join units as u
        on u.valid_from <= p.last_day and (u.valid_to is null or u.valid_to >= p.last_day)
),

levels as (
    select c.period, c.unit_id, c.carrier_id as rollup_unit_id, 0 as distance
    from carrier as c
    union all
    select c.period, c.unit_id, t1.parent_unit_id, 1
    from carrier as c
    inner join tree as t1 on t1.period = c.period and t1.unit_id = c.carrier_id
    where t1.parent_unit_id is not null
    union all
    select c.period, c.unit_id, t2.parent_unit_id, 2
    from carrier as c
    inner join tree as t1 on t1.period = c.period and t1.unit_id = c.carrier_id
    inner join tree as t2 on t2.period = c.period and t2.unit_id = t1.parent_unit_id
    where t2.parent_unit_id is not null
)

select distinct period, unit_id, rollup_unit_id, distance from levels

{{ config(severity='warn') }}
-- Units valid in a reported period whose registered parent is not valid then: the registry
-- closed or reorganised the parent without moving its children. The period's tree puts such a
-- unit under the unit that carries its parent's records (its successor, or its own parent), so
-- nothing is lost on the way up (int_units_rolled_up_by_period, mart_index_unit_period's
-- parent_unit_id); listed so that the registry can be corrected. A warning.
with

units as (
    select period, unit_id, parent_unit_id
    from {{ ref('int_units_by_period') }}
    where is_valid_at_end and parent_unit_id is not null
),

parents as (
    select period, unit_id, is_valid_at_end
    from {{ ref('int_units_by_period') }}
),

tree_parents as (
    select period, unit_id, rollup_unit_id as tree_parent_id
    from {{ ref('int_units_rolled_up_by_period') }}
    where distance = 1 and route = 'own'
)

select
    u.unit_id,
    u.parent_unit_id as registered_parent_id,
    tp.tree_parent_id,
    list(u.period order by u.period) as periods
from units as u
inner join {{ ref('int_period_judgement') }} as pe on pe.period = u.period and pe.is_reported
left join parents as p on p.period = u.period and p.unit_id = u.parent_unit_id
left join tree_parents as tp on tp.period = u.period and tp.unit_id = u.unit_id
where not coalesce(p.is_valid_at_end, false)
group by all

{{ config(materialized='table', tags=['index', 'mart']) }}
-- One row per unit × period (unit_id, period): the six group scores and the total, the rank
-- among the units sharing a parent, the change from the previous period of the same type, and
-- what the figure rests on (methodology, data watermark, the moment it was judged at, status,
-- when computed). BI tools and publication read this mart; it holds no personal data.

with

points as (
    select * from {{ ref('int_indicator_points') }}
),

periods as (
    select * from {{ ref('int_period_judgement') }}
),

units as (
    select * from {{ ref('int_units_by_period') }}
    where is_valid_at_end
),

-- Each unit's parent in the period's tree: the registry's parent, or, when the registry left
-- the unit under a parent no longer valid then, the unit that carries that parent's records
-- (int_units_rolled_up_by_period; the warning test units_under_a_parent_no_longer_valid)
tree_parents as (
    select period, unit_id, rollup_unit_id as parent_unit_id
    from {{ ref('int_units_rolled_up_by_period') }}
    where distance = 1 and route = 'own'
),

groups as (
    select
        unit_id,
        period,
        any_value(methodology) as methodology,
        coalesce(sum(points order by indicator) filter (where group_code = 'CKMB'), 0) as ckmb,
        coalesce(sum(points order by indicator) filter (where group_code = 'TDGQ'), 0) as tdgq,
        coalesce(sum(points order by indicator) filter (where group_code = 'CLGQ'), 0) as clgq,
        coalesce(sum(points order by indicator) filter (where group_code = 'TTTT'), 0) as tttt,
        coalesce(sum(points order by indicator) filter (where group_code = 'MDSH'), 0) as mdsh,
        coalesce(sum(points order by indicator) filter (where group_code = 'MDHL'), 0) as mdhl,
    from points
    group by unit_id, period
),

-- Sums of doubles in a fixed order (indicator, then group as the methodology lists them), so
-- that a total is the same number at every build, whatever order the rows were read in.
totalled as (
    select *, ckmb + tdgq + clgq + tttt + mdsh + mdhl as total
    from groups
),

described as (
    select
        g.*,
        pe.period_type,
        pe.starts_at,
        pe.ends_at,
        pe.data_watermark,
        pe.judged_as_of,
        pe.status,
        pe.previous_period,
        u.unit_name,
        u.unit_level,
        -- a unit whose registered parent has no carrier that day (a parent not yet begun) keeps
        -- it: it is no top unit, and the conservation test names what it then fails to pass up
        coalesce(tp.parent_unit_id, u.parent_unit_id) as parent_unit_id
    from totalled as g
    inner join periods as pe using (period)
    inner join units as u on u.unit_id = g.unit_id and u.period = g.period
    left join tree_parents as tp on tp.unit_id = g.unit_id and tp.period = g.period
)

select
    d.unit_id,
    d.unit_name,
    d.unit_level,
    d.parent_unit_id,
    d.period,
    d.period_type,
    d.ckmb,
    d.tdgq,
    d.clgq,
    d.tttt,
    d.mdsh,
    d.mdhl,
    d.total,
    -- ranked on the total as published, 2 decimals as the files and the report print it (the
    -- double's exact value rounded, as printf and Rust's {:.2} do; round() rounds 84.995 up):
    -- two units shown as 85.00 share a rank, whatever their totals' further digits
    rank() over (partition by d.period, d.parent_unit_id order by cast(printf('%.2f', d.total) as double) desc)
        as rank_among_siblings,
    -- against the unit's total in the period of the same type just before (empty when it had no
    -- row there: a new unit, or the first reported period)
    d.total - prev.total as change_from_previous,
    -- Final once the data has moved ten days past the period's end (the grace window for late
    -- syncs); provisional before (int_period_judgement).
    d.status,
    d.methodology,
    d.data_watermark,
    -- the moment the period's rules judged it at: its end, or the data watermark while it runs
    d.judged_as_of,
    -- Vietnamese wall-clock time (UTC+7 all year; the bundled DuckDB has no time zones).
    cast(get_current_timestamp() as timestamp) + interval 7 hour as computed_at
from described as d
left join totalled as prev on prev.unit_id = d.unit_id and prev.period = d.previous_period

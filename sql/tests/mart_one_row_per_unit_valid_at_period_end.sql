-- Every reported period (from the first month with a dossier to the period the data watermark
-- is in) has exactly one row per unit valid at its end in mart_index_unit_period: no unit left
-- out of a ranking because it had no records, none counted twice, none that had ended.
with

expected as (
    -- read from the registry itself, not from int_units_by_period (which the mart reads)
    select distinct u.unit_id, pe.period
    from {{ ref('int_period_judgement') }} as pe
    inner join {{ ref('dim_units') }} as u
        on u.valid_from <= pe.judged_on and (u.valid_to is null or u.valid_to >= pe.judged_on)
    where pe.is_reported
),

got as (
    select m.unit_id, m.period, count(*) as rows
    from {{ ref('mart_index_unit_period') }} as m
    semi join {{ ref('int_period_judgement') }} as pe on pe.period = m.period and pe.is_reported
    group by all
)

select coalesce(e.unit_id, g.unit_id) as unit_id, coalesce(e.period, g.period) as period,
    coalesce(g.rows, 0) as rows,
    case when e.unit_id is null then 'not valid at the period''s end' when g.rows is null then 'missing' else 'repeated' end as problem
from expected as e
full join got as g on g.unit_id = e.unit_id and g.period = e.period
where e.unit_id is null or g.rows is null or g.rows <> 1

-- Every indicator's points lie between 0 and its maximum, and every group's points between 0 and
-- the group's maximum (methodology), for every unit and period.
with

methodology as (
    select distinct methodology, group_code, group_max from {{ ref('methodology') }}
),

groups as (
    unpivot (
        select unit_id, period, methodology, ckmb as CKMB, tdgq as TDGQ, clgq as CLGQ, tttt as TTTT, mdsh as MDSH, mdhl as MDHL
        from {{ ref('mart_index_unit_period') }}
    )
    on CKMB, TDGQ, CLGQ, TTTT, MDSH, MDHL
    into name group_code value points
)

select unit_id, period, indicator as item, points, max_points as maximum
from {{ ref('mart_index_indicator') }}
where points < 0 or points > max_points + 1e-9
union all
select g.unit_id, g.period, 'group ' || g.group_code, g.points, m.group_max
from groups as g
left join methodology as m using (methodology, group_code)
where g.points < 0 or m.group_max is null or g.points > m.group_max + 1e-9

-- For every unit and period: the total is the sum of the six groups, and each group is the sum
-- of its indicators' points (mart_index_indicator), to within rounding of doubles.
with

units as (
    select * from {{ ref('mart_index_unit_period') }}
),

indicator_sums as (
    select
        unit_id,
        period,
        coalesce(sum(points) filter (where group_code = 'CKMB'), 0) as ckmb,
        coalesce(sum(points) filter (where group_code = 'TDGQ'), 0) as tdgq,
        coalesce(sum(points) filter (where group_code = 'CLGQ'), 0) as clgq,
        coalesce(sum(points) filter (where group_code = 'TTTT'), 0) as tttt,
        coalesce(sum(points) filter (where group_code = 'MDSH'), 0) as mdsh,
        coalesce(sum(points) filter (where group_code = 'MDHL'), 0) as mdhl,
        coalesce(sum(points), 0) as total
    from {{ ref('mart_index_indicator') }}
    group by all
)

select u.unit_id, u.period, u.total, i.total as indicator_total
from units as u
left join indicator_sums as i using (unit_id, period)
where abs(u.total - (u.ckmb + u.tdgq + u.clgq + u.tttt + u.mdsh + u.mdhl)) > 1e-9
   or i.unit_id is null
   or abs(u.total - i.total) > 1e-9
   or abs(u.ckmb - i.ckmb) > 1e-9
   or abs(u.tdgq - i.tdgq) > 1e-9
   or abs(u.clgq - i.clgq) > 1e-9
   or abs(u.tttt - i.tttt) > 1e-9
   or abs(u.mdsh - i.mdsh) > 1e-9
   or abs(u.mdhl - i.mdhl) > 1e-9

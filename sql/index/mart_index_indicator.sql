{{ config(materialized='table', tags=['index', 'mart']) }}
-- One row per unit × period × indicator (unit_id, period, indicator): numerator, denominator,
-- ratio, points and maximum, for BI tools and publication. No personal data.

select
    p.unit_id,
    p.period,
    p.group_code,
    p.indicator,
    p.numerator,
    p.denominator,
    p.ratio,
    p.points,
    p.max_points,
    p.methodology
from {{ ref('int_indicator_points') }} as p

{{ config(materialized='table', tags=['reconciliation', 'mart']) }}
-- One row per portal unit × period × code × vintage (department_id, period, code, vintage):
-- each figure the portal published and each time it changed, from what to what, with when
-- chiso first saw it. The portal keeps no history (it revises closed periods silently); the
-- lake keeps every distinct answer, and this mart reads them in order. A figure is followed in
-- the answers that give it best (as int_portal_figures chooses), so one change is one row.
-- `is_revision` marks the changes first seen after the period ended (the portal's silent
-- revisions of a closed period; a running period changes every day as its data comes in).

with

rows as (
    select * from {{ ref('stg_portal__evaluations') }}
    where not (endpoint = 'service-results' and level = 'group')
),

source as (
    select period, department_id, code, endpoint, shown_as = 'root' as is_root
    from {{ ref('int_portal_figures') }}
),

followed as (
    select r.*
    from rows as r
    inner join source as s using (period, department_id, code, endpoint, is_root)
),

-- The same figure in consecutive answers is one vintage.
changes as (
    select
        *,
        lag(numerator) over w as previous_numerator,
        lag(denominator) over w as previous_denominator,
        lag(score) over w as previous_score,
        lag(data_quality_status) over w as previous_data_quality_status,
        row_number() over w as seen
    from followed
    window w as (partition by period, department_id, code order by fetched_at)
),

vintages as (
    select *
    from changes
    where seen = 1
        or numerator is distinct from previous_numerator
        or denominator is distinct from previous_denominator
        or score is distinct from previous_score
        or data_quality_status is distinct from previous_data_quality_status
),

-- One unit per department id (the registry's latest version naming it).
units as (
    select unit_id, portal_department_id
    from {{ ref('dim_units') }}
    where portal_department_id is not null
    qualify row_number() over (partition by portal_department_id order by valid_from desc, unit_id) = 1
)

select
    v.department_id,
    u.unit_id,
    v.department_name,
    v.period,
    v.period_type,
    v.code,
    v.level,
    cast(row_number() over (partition by v.period, v.department_id, v.code order by v.fetched_at) as integer) as vintage,
    v.fetched_at as first_seen_at,
    case when v.seen > 1 then v.previous_numerator end as previous_numerator,
    case when v.seen > 1 then v.previous_denominator end as previous_denominator,
    case when v.seen > 1 then v.previous_score end as previous_score,
    v.numerator,
    v.denominator,
    v.score,
    case when v.seen > 1 then v.previous_data_quality_status end as previous_data_quality_status,
    v.data_quality_status,
    case when v.seen > 1 then round(v.score - v.previous_score, 2) end as score_change,
    -- a change first seen after the period ended: the portal revised a closed period (a
    -- running one changes every day as its data comes in)
    v.seen > 1 and v.fetched_at >= cast(pe.ends_before as timestamp) as is_revision
from vintages as v
left join units as u on u.portal_department_id = v.department_id
left join {{ ref('dim_periods') }} as pe on pe.period = v.period

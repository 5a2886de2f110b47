{{ config(materialized='table', tags=['reconciliation']) }}
-- One row per period × portal unit × code (period, department_id, code): what the portal shows
-- now, from the latest answer of each endpoint, period and root. A unit's figure comes from
-- the answer that asked for it (richer: the tree family's counters are on the parent only)
-- before the answers that list it; group totals come from their group's endpoint, the total
-- from service-results. `source` says which: `<endpoint>` and `root` or `listed`.

with

rows as (
    select * from {{ ref('stg_portal__evaluations') }}
    -- group scores come from their own endpoint; service-results gives the total
    where not (endpoint = 'service-results' and level = 'group')
),

latest as (
    select endpoint, period, root_department_id, max(fetched_at) as fetched_at
    from rows
    group by all
),

current as (
    select r.*
    from rows as r
    semi join latest as l using (endpoint, period, root_department_id, fetched_at)
)

select
    period,
    period_type,
    department_id,
    department_name,
    code,
    level,
    endpoint,
    case when is_root then 'root' else 'listed' end as shown_as,
    numerator,
    denominator,
    ratio_percent,
    score,
    max_score,
    data_quality_status,
    fetched_at
from current
qualify row_number() over (
    partition by period, department_id, code
    order by is_root desc, fetched_at desc, endpoint
) = 1

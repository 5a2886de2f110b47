{{ config(materialized='table', tags=['staging', 'reconciliation']) }}
-- One row per answer × unit × code (endpoint, period, root_department_id, fetched_at,
-- department_id, code): the portal's published evaluation flattened from both answer
-- families (PORTAL_EVALUATION_API.md §3). The metric family (transparency,
-- handling-satisfaction, dossier-digitized) gives each metric of the unit asked for
-- (`overview`) and of each child (`evaluation[]`); the tree family gives the named counters of
-- the parent and children (dvc-progress-tree: totalOnTime of totalReceived; provide-online-tree:
-- the parent's counters only; formality-online-payment-tree: the payment counters);
-- service-results gives the six group scores and the total. Each unit's group total
-- (totalScore of the group's endpoint) is a row whose code is the group's (CKMB, TDGQ, CLGQ,
-- TTTT, MDSH, MDHL), and service-results' total is code TOTAL. Nulls stay nulls.

with

source as (
    select * from {{ source('portal', 'evaluations') }}
),

answers as (
    select
        endpoint,
        period,
        period_type,
        root_department_id,
        fetched_at,
        content_sha256,
        _ingested_at as loaded_at,
        cast(data as json) as data
    from source
),

-- The units of each answer: the one asked for, and those it lists.
units as (
    select a.* exclude (data), true as is_root, coalesce(a.data -> 'overview', a.data -> 'parent') as unit
    from answers as a
    union all
    select a.* exclude (data), false as is_root, unnest(from_json(coalesce(a.data -> 'evaluation', a.data -> 'children'), '["JSON"]')) as unit
    from answers as a
),

named as (
    select
        * exclude (unit),
        unit ->> 'departmentId' as department_id,
        unit ->> 'departmentName' as department_name,
        unit
    from units
),

metrics as (
    select n.* exclude (unit), unnest(from_json(n.unit -> 'metrics', '["JSON"]')) as metric
    from named as n
    where n.endpoint in ('transparency', 'handling-satisfaction', 'dossier-digitized')
),

metric_rows as (
    select
        * exclude (metric),
        metric ->> 'code' as code,
        try_cast(metric ->> 'numerator' as double) as numerator,
        try_cast(metric ->> 'denominator' as double) as denominator,
        try_cast(metric ->> 'ratio' as double) as ratio_percent,
        try_cast(metric ->> 'score' as double) as score,
        try_cast(metric ->> 'maxScore' as double) as max_score,
        metric ->> 'dataQualityStatus' as data_quality_status
    from metrics
),

-- The tree family's counters: (endpoint, code, numerator field(s), denominator field).
tree_counters as (
    select * from (values
        ('dvc-progress-tree', 'ON_TIME_HANDLING', ['totalOnTime'], 'totalReceived'),
        ('provide-online-tree', 'ONLINE_SERVICE_PROVIDED', ['partialCount', 'fullCount'], 'authorityCount'),
        ('provide-online-tree', 'ONLINE_SERVICE_WITH_DOSSIER', ['onlineDossierCount'], 'onlineServiceTotal'),
        ('provide-online-tree', 'ONLINE_DOSSIER_SHARE', ['channelOnlineSum'], 'channelTotalSum'),
        ('formality-online-payment-tree', 'ONLINE_PAYMENT_DOSSIER', ['totalDossierOnlinePaymentSuccess'], 'totalDossierFinancialObligation'),
        ('formality-online-payment-tree', 'ONLINE_PAYMENT_FORMALITY', ['totalDossierOnlineFormalityPaymentSuccess'], 'totalFeeFormality'),
        ('formality-online-payment-tree', 'FEE_FORMALITY_WITH_DOSSIER', ['totalFeeDossierFormality'], 'totalFeeFormality')
    ) as t(endpoint, code, numerator_fields, denominator_field)
),

tree_rows as (
    select
        n.* exclude (unit),
        c.code,
        -- a counter the node does not carry (a child of provide-online-tree) gives no row
        list_sum(list_transform(c.numerator_fields, lambda f: try_cast(n.unit ->> f as double))) as numerator,
        try_cast(n.unit ->> c.denominator_field as double) as denominator,
        null::double as ratio_percent,
        null::double as score,
        null::double as max_score,
        null::varchar as data_quality_status
    from named as n
    inner join tree_counters as c on c.endpoint = n.endpoint
    where n.unit ->> c.denominator_field is not null
),

-- Each unit's group total, from its group's endpoint.
group_rows as (
    select
        n.* exclude (unit),
        case n.endpoint
            when 'transparency' then 'CKMB'
            when 'dvc-progress-tree' then 'TDGQ'
            when 'provide-online-tree' then 'CLGQ'
            when 'formality-online-payment-tree' then 'TTTT'
            when 'dossier-digitized' then 'MDSH'
            when 'handling-satisfaction' then 'MDHL'
        end as code,
        null::double as numerator,
        null::double as denominator,
        null::double as ratio_percent,
        try_cast(coalesce(n.unit ->> 'totalScore', n.unit ->> 'score') as double) as score,
        try_cast(coalesce(n.unit ->> 'totalMaxScore', n.unit ->> 'maxScore') as double) as max_score,
        null::varchar as data_quality_status
    from named as n
    where n.endpoint <> 'service-results'
),

-- service-results: the six group scores and the total.
summary_groups as (
    select n.* exclude (unit), unnest(['CKMB', 'TDGQ', 'CLGQ', 'TTTT', 'MDSH', 'MDHL']) as code, n.unit -> 'groupScores' as scores
    from named as n
    where n.endpoint = 'service-results'
),

summary_rows as (
    select
        * exclude (scores, code),
        code,
        null::double as numerator,
        null::double as denominator,
        null::double as ratio_percent,
        try_cast(scores ->> code as double) as score,
        case code when 'CKMB' then 18 when 'TDGQ' then 20 when 'CLGQ' then 12 when 'TTTT' then 10 when 'MDSH' then 22 else 18 end::double as max_score,
        null::varchar as data_quality_status
    from summary_groups
    union all
    select
        n.* exclude (unit),
        'TOTAL' as code,
        null::double,
        null::double,
        null::double,
        try_cast(n.unit ->> 'totalScore' as double),
        100::double,
        null::varchar
    from named as n
    where n.endpoint = 'service-results'
)

select
    endpoint,
    period,
    period_type,
    root_department_id,
    fetched_at,
    content_sha256,
    department_id,
    department_name,
    is_root,
    code,
    case when code in ('CKMB', 'TDGQ', 'CLGQ', 'TTTT', 'MDSH', 'MDHL') then 'group' when code = 'TOTAL' then 'total' else 'indicator' end as level,
    numerator,
    denominator,
    ratio_percent,
    score,
    max_score,
    data_quality_status,
    loaded_at
from (
    select * from metric_rows
    union all by name
    select * from tree_rows
    union all by name
    select * from group_rows
    union all by name
    select * from summary_rows
)
-- a row without a unit (the national summary's overview, `Cả nước`) is no unit's figure
where department_id is not null

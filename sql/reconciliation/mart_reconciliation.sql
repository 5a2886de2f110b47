{{ config(materialized='table', tags=['reconciliation', 'mart']) }}
-- One row per unit × period × code (unit_id or department_id, period, code), for every period
-- the portal's evaluation was pulled for: the portal's figure beside chiso's, the difference,
-- whether it is within rounding, and why they differ. Codes are the indicators the portal
-- shows (level `indicator`), the six groups (`group`) and the total (`total`).
--
-- Which codes are compared at a unit follows what the portal shows there: a unit the portal
-- was asked about as a root (`shown_as` root) gets every indicator of each endpoint; a unit it
-- only lists gets what the lists carry (provide-online-tree lists group totals only). A unit or
-- code on one side only is a row, never a difference of the whole value: `only_in_chiso`
-- (the portal left it out, or shows it as null where chiso scores it: `not_scored_on_the_portal`)
-- or `only_on_the_portal`.
--
-- cause, in order: only_in_chiso, only_on_the_portal, flagged_by_the_portal (the portal marks
-- the figure, e.g. a temporary national-report denominator), counts_differ (numerator or
-- denominator, exactly), not_scored_on_the_portal, same_counts_different_score (a score on
-- one side only, or scores apart beyond `tolerance`: 0.015 points for an indicator, more for
-- a group or total the portal may add up from rounded parts: the methodology differs),
-- agrees. A group or total whose indicators
-- differ takes their cause; `is_root_cause` marks the rows that explain the others (the
-- indicators, and a group where the portal shows no indicator of it at the unit).
-- `is_ended`: the period had ended when the portal's figure was fetched, figure by figure (a
-- running period is judged by the portal at its computation and by chiso at its data
-- watermark: provisional).

with

portal as (
    select * from {{ ref('int_portal_figures') }}
),

portal_periods as (
    select distinct p.period, pe.period_type, pe.ends_before
    from portal as p
    inner join {{ ref('dim_periods') }} as pe using (period)
),

-- Each unit's latest version, and one unit per department id for the portal's side (two
-- units naming the same id would otherwise double the portal's figure).
units as (
    select unit_id, portal_department_id, unit_name, unit_level, valid_from
    from {{ ref('dim_units') }}
    qualify row_number() over (partition by unit_id order by valid_from desc) = 1
),

unit_of_department as (
    select portal_department_id, unit_id, unit_name
    from units
    where portal_department_id is not null
    qualify row_number() over (partition by portal_department_id order by valid_from desc, unit_id) = 1
),

-- The rounding a score may carry: 0.015 points for an indicator (the portal rounds to 2
-- decimals); a group or total the portal may add up from rounded parts, each off by up to
-- 0.005 (its scored indicators; a total's six groups and their indicators).
tolerance as (
    select group_code as code, 0.015 + 0.005 * count(distinct indicator) as tolerance
    from {{ ref('methodology') }}
    where scored and max_points > 0
    group by all
    union all
    select 'TOTAL', 0.015 + 0.005 * (count(distinct indicator) + count(distinct group_code))
    from {{ ref('methodology') }}
    where scored and max_points > 0
),

-- How the portal shows each unit in a period: asked for as a root, or listed.
shown as (
    select period, department_id, bool_or(shown_as = 'root') as is_root
    from portal
    group by all
),

-- What the portal shows of a unit asked for as a root, and of a listed one.
shown_codes as (
    select * from (values
        ('PUBLISH_ON_TIME', true, true), ('PUBLIC_UPDATE_ON_TIME', true, true),
        ('PUBLIC_CONTENT_FULL', true, true), ('DOSSIER_SYNC', true, true),
        ('ON_TIME_HANDLING', true, true),
        ('ONLINE_SERVICE_PROVIDED', true, false), ('ONLINE_SERVICE_WITH_DOSSIER', true, false),
        ('ONLINE_DOSSIER_SHARE', true, false),
        ('ONLINE_PAYMENT_DOSSIER', true, true), ('ONLINE_PAYMENT_FORMALITY', true, true),
        ('FEE_FORMALITY_WITH_DOSSIER', true, true),
        ('ORIGINAL_RESULT_AVAILABLE', true, true), ('SO_HOA_GIAY_TO_GIAI_QUYET', true, true),
        ('ELECTRONIC_CERTIFIED_COPY', true, true), ('REUSED_DIGITIZED_DATA', true, true),
        ('SYNCED_WITH_DVCQG_PERSONAL_STORAGE', true, true),
        ('CITIZEN_DATA_CONNECTED_DOSSIER', true, true), ('CITIZEN_DATA_CONNECTED_FORMALITY', true, true),
        ('PETITION_PROCESSING_ON_TIME', true, true), ('PETITION_HANDLING_SATISFACTION', true, true),
        ('DOSSIER_RECEIVING_SATISFACTION', true, true),
        ('PETITION_CLASSIFICATION_TTHC', true, true), ('PETITION_CLASSIFICATION_STAFF', true, true),
        ('CKMB', true, true), ('TDGQ', true, true), ('CLGQ', true, true), ('TTTT', true, true),
        ('MDSH', true, true), ('MDHL', true, true), ('TOTAL', true, true)
    ) as t(code, as_root, as_listed)
),

-- The metric codes the portal scores itself (the tree family gives counters only).
scored_by_portal as (
    select unnest([
        'PUBLISH_ON_TIME', 'PUBLIC_UPDATE_ON_TIME', 'PUBLIC_CONTENT_FULL', 'DOSSIER_SYNC',
        'ORIGINAL_RESULT_AVAILABLE', 'SO_HOA_GIAY_TO_GIAI_QUYET', 'ELECTRONIC_CERTIFIED_COPY',
        'REUSED_DIGITIZED_DATA', 'SYNCED_WITH_DVCQG_PERSONAL_STORAGE',
        'CITIZEN_DATA_CONNECTED_DOSSIER', 'CITIZEN_DATA_CONNECTED_FORMALITY',
        'PETITION_PROCESSING_ON_TIME', 'PETITION_HANDLING_SATISFACTION',
        'DOSSIER_RECEIVING_SATISFACTION', 'PETITION_CLASSIFICATION_TTHC', 'PETITION_CLASSIFICATION_STAFF'
    ]) as code
),

group_of as (
    select indicator as code, any_value(group_code) as group_code
    from {{ ref('methodology') }}
    group by all
),

-- chiso's figures in the periods the portal was asked about.
chiso_indicators as (
    select i.unit_id, i.period, i.indicator as code, 'indicator' as level,
        i.numerator, i.denominator, i.points as score, i.max_points as max_score
    from {{ ref('mart_index_indicator') }} as i
    semi join portal_periods as p using (period)
),

chiso_groups as (
    select unit_id, period, upper(code) as code, case when code = 'total' then 'total' else 'group' end as level,
        null::double as numerator, null::double as denominator, score,
        case upper(code) when 'CKMB' then 18 when 'TDGQ' then 20 when 'CLGQ' then 12 when 'TTTT' then 10
            when 'MDSH' then 22 when 'MDHL' then 18 else 100 end::double as max_score
    from (
        unpivot (
            select unit_id, period, ckmb, tdgq, clgq, tttt, mdsh, mdhl, total
            from {{ ref('mart_index_unit_period') }}
            semi join portal_periods using (period)
        )
        on ckmb, tdgq, clgq, tttt, mdsh, mdhl, total
        into name code value score
    )
),

chiso as (
    select c.*, u.portal_department_id as department_id
    from (select * from chiso_indicators union all select * from chiso_groups) as c
    left join units as u using (unit_id)
    -- only the codes the portal shows at the unit, as a root or as listed
    inner join shown_codes as sc using (code)
    left join shown as s on s.period = c.period and s.department_id = u.portal_department_id
    where case when coalesce(s.is_root, false) then sc.as_root else sc.as_listed end
),

joined as (
    select
        coalesce(c.unit_id, u.unit_id) as unit_id,
        coalesce(p.department_id, c.department_id) as department_id,
        coalesce(u.unit_name, p.department_name) as unit_name,
        coalesce(p.period, c.period) as period,
        coalesce(p.code, c.code) as code,
        coalesce(p.level, c.level) as level,
        p.endpoint as portal_endpoint,
        p.shown_as as portal_shown_as,
        p.numerator as portal_numerator,
        p.denominator as portal_denominator,
        p.score as portal_score,
        p.max_score as portal_max_score,
        p.data_quality_status,
        p.fetched_at as portal_fetched_at,
        c.numerator as chiso_numerator,
        c.denominator as chiso_denominator,
        c.score as chiso_score,
        c.max_score as chiso_max_score,
        p.department_id is not null as on_portal,
        c.unit_id is not null as in_chiso
    from portal as p
    full join chiso as c
        on c.department_id = p.department_id and c.period = p.period and c.code = p.code
    left join unit_of_department as u on u.portal_department_id = p.department_id
),

compared as (
    select
        j.*,
        case
            when j.level <> 'indicator' or not (j.on_portal and j.in_chiso) then null
            when j.portal_numerator is null and j.portal_denominator is null and j.code = 'ELECTRONIC_CERTIFIED_COPY' then true
            else j.portal_numerator is not distinct from j.chiso_numerator
                and j.portal_denominator is not distinct from j.chiso_denominator
        end as counts_equal,
        case when j.portal_score is not null and j.chiso_score is not null
            then round(j.portal_score - j.chiso_score, 4) end as score_difference,
        j.code in (select code from scored_by_portal) as is_scored_by_portal,
        coalesce(t.tolerance, 0.015) as tolerance
    from joined as j
    left join tolerance as t on j.level <> 'indicator' and t.code = j.code
),

-- A group's indicators at the unit: whether any differ in counts.
group_state as (
    select
        c.department_id,
        c.period,
        g.group_code,
        bool_or(c.counts_equal = false or (c.in_chiso and not c.on_portal)) as indicator_counts_differ
    from compared as c
    inner join group_of as g using (code)
    where c.level = 'indicator'
    group by all
),

-- The groups whose indicators the portal shows at a unit asked for as a root, and at one it
-- lists (provide-online-tree lists group totals only).
groups_with_indicators as (
    select g.group_code, bool_or(sc.as_root) as as_root, bool_or(sc.as_listed) as as_listed
    from shown_codes as sc
    inner join group_of as g using (code)
    group by all
),

sided as (
    select
        c.*,
        c.on_portal and c.in_chiso
            and (c.level <> 'indicator' or c.is_scored_by_portal)
            and (c.portal_score is null) <> (c.chiso_score is null) as score_one_sided
    from compared as c
),

caused as (
    select
        c.*,
        case
            when not c.on_portal then 'only_in_chiso'
            when not c.in_chiso then 'only_on_the_portal'
            when c.data_quality_status is not null then 'flagged_by_the_portal'
            when c.counts_equal = false then 'counts_differ'
            when c.level = 'indicator' and c.is_scored_by_portal and c.portal_score is null and c.chiso_score is not null
                then 'not_scored_on_the_portal'
            -- a score on one side only (missing is not zero), or apart beyond rounding
            when c.score_one_sided or abs(coalesce(c.score_difference, 0)) > c.tolerance then
                case
                    when c.level = 'group' and coalesce(gs.indicator_counts_differ, false) then 'counts_differ'
                    when c.level = 'total' and exists (
                        select 1 from group_state as x
                        where x.department_id = c.department_id and x.period = c.period and x.indicator_counts_differ
                    ) then 'counts_differ'
                    else 'same_counts_different_score'
                end
            else 'agrees'
        end as cause,
        case
            when c.level = 'indicator' then true
            when c.level = 'group' then not coalesce(
                case when coalesce(s.is_root, false) then gi.as_root else gi.as_listed end, false)
            else false
        end as is_root_cause
    from sided as c
    left join group_state as gs
        on gs.department_id = c.department_id and gs.period = c.period and gs.group_code = c.code
    left join groups_with_indicators as gi on gi.group_code = c.code
    left join shown as s on s.period = c.period and s.department_id = c.department_id
)

select
    unit_id,
    department_id,
    unit_name,
    c.period,
    pp.period_type,
    code,
    level,
    portal_endpoint,
    portal_shown_as,
    portal_numerator,
    portal_denominator,
    portal_score,
    portal_max_score,
    data_quality_status,
    chiso_numerator,
    chiso_denominator,
    chiso_score,
    chiso_max_score,
    score_difference,
    tolerance,
    counts_equal,
    on_portal and in_chiso
        and coalesce(counts_equal, true)
        and not score_one_sided
        and abs(coalesce(score_difference, 0)) <= tolerance
        and not (cause = 'not_scored_on_the_portal') as is_within_rounding,
    cause,
    is_root_cause,
    -- the portal's figure was fetched after the period ended (a figure only in chiso: when
    -- the portal's latest answers for the period were)
    coalesce(portal_fetched_at, pp.latest_fetched_at) >= cast(pp.ends_before as timestamp) as is_ended,
    portal_fetched_at
from caused as c
left join (
    select pp.period, pp.period_type, pp.ends_before, max(p.fetched_at) as latest_fetched_at
    from portal_periods as pp
    inner join portal as p using (period)
    group by all
) as pp using (period)

{{ config(materialized='table', tags=['index']) }}
-- One row per unit × period × indicator: numerator and denominator of SPEC §4, counted for the
-- unit itself and rolled up to every ancestor (sums of counts, never averages of ratios), with
-- the methodology version in force for the period. Period attribution per indicator:
-- receipt (dossiers received in the period), handled_or_open (ON_TIME_HANDLING), announcement
-- (PUBLISH_*), first_receipt (petitions), as_of_now (catalogue state today).

with

periods as (
    select * from {{ ref('dim_periods') }}
),

rollup as (
    select * from {{ ref('int_units_rolled_up_by_period') }}
),

units as (
    select * from {{ ref('dim_units') }}
),

petitions as (
    select * from {{ ref('fct_petitions') }}
),

procedures as (
    select * from {{ ref('stg_catalogue__procedures') }}
),

national as (
    select * from {{ ref('stg_national_report__received') }}
),

calendar as (
    select * from {{ ref('dim_calendar') }}
),

-- Dossiers ----------------------------------------------------------------------------------
-- Each dossier is read once, into small tables keyed by unit and month (received, finished,
-- due, first late sync). A period of any type is then a range of months: "received in the
-- period" is a month between its first and last; "finished before its end" is a finished
-- month before the month after it; and so on. Counts for quarters and years are therefore
-- exactly the counts of the rule, not sums of monthly ratios.

-- Receipt-attributed counts, per unit, month received and procedure (DOSSIER_SYNC included).
receipt_base as (
    select * from {{ ref('int_dossier_receipts_by_month') }}
),

sync_base as (
    select unit_id, month, sum(synced_month) as synced_month, sum(synced_quarter) as synced_quarter, sum(synced_year) as synced_year
    from receipt_base
    group by all
),

-- ON_TIME_HANDLING and AVERAGE_HANDLING_DAYS, per unit and months received, finished, due.
handling_base as (
    select * from {{ ref('int_dossier_handling_by_month') }}
),

-- Receipt-attributed counts per unit and month: the procedure's attributes (as of now) decide
-- which receipts count for the result-on-paper and replaceable-components indicators.
receipt_unit_month as (
    select
        b.unit_id,
        b.month,
        sum(b.received) as received,
        sum(b.online) as online,
        sum(b.in_person) as in_person,
        sum(b.postal) as postal,
        sum(b.obligation) as obligation,
        sum(b.obligation_paid_online) as obligation_paid_online,
        sum(b.with_result) filter (where p.is_result_paper) as paper_results,
        sum(b.with_result_electronic) filter (where p.is_result_paper) as paper_results_electronic,
        sum(b.digitised) as digitised,
        sum(b.received) filter (where p.has_replaceable_components) as replaceable,
        sum(b.reused) filter (where p.has_replaceable_components) as replaceable_reused,
        sum(b.online_store_linked) as online_store_linked,
        sum(b.population) as population,
        sum(b.not_unsatisfied) as not_unsatisfied
    from receipt_base as b
    left join procedures as p on p.procedure_code = b.procedure_code
    group by all
),

receipt_counts as (
    select
        ru.rollup_unit_id as unit_id,
        pe.period,
        sum(r.received) as received,
        sum(r.online) as online,
        sum(r.in_person) as in_person,
        sum(r.postal) as postal,
        sum(r.obligation) as obligation,
        sum(r.obligation_paid_online) as obligation_paid_online,
        sum(r.paper_results) as paper_results,
        sum(r.paper_results_electronic) as paper_results_electronic,
        sum(r.digitised) as digitised,
        sum(r.replaceable) as replaceable,
        sum(r.replaceable_reused) as replaceable_reused,
        sum(r.online_store_linked) as online_store_linked,
        sum(r.population) as population,
        sum(r.not_unsatisfied) as not_unsatisfied
    from receipt_unit_month as r
    inner join periods as pe on r.month >= pe.starts_on and r.month < pe.ends_before
    inner join rollup as ru on ru.period = pe.period and ru.unit_id = r.unit_id
    group by all
),

sync_counts as (
    select
        ru.rollup_unit_id as unit_id,
        pe.period,
        sum(case pe.period_type
            when 'month' then b.synced_month
            when 'quarter' then b.synced_quarter
            else b.synced_year
        end) as synced_in_time
    from sync_base as b
    inner join periods as pe on b.month >= pe.starts_on and b.month < pe.ends_before
    inner join rollup as ru on ru.period = pe.period and ru.unit_id = b.unit_id
    group by all
),

national_counts as (
    select ru.rollup_unit_id as unit_id, pe.period, sum(n.received_count) as national_received
    from national as n
    inner join periods as pe
        on cast(n.period || '-01' as date) >= pe.starts_on and cast(n.period || '-01' as date) < pe.ends_before
    inner join rollup as ru on ru.period = pe.period and ru.unit_id = n.unit_id
    group by ru.rollup_unit_id, pe.period
),

handling as (
    select
        ru.rollup_unit_id as unit_id,
        pe.period,
        sum(b.dossiers) as handled_or_open,
        coalesce(sum(b.dossiers) filter (
            where (b.finished_month < pe.ends_before and not b.is_late)
               or ((b.finished_month is null or b.finished_month >= pe.ends_before)
                   and b.due_month >= pe.ends_before and b.at_most_one_supplement)
        ), 0) as on_time,
        -- AVERAGE_HANDLING_DAYS (shown, not scored): dossiers finished in the period
        sum(b.finished) filter (
            where b.finished_month >= pe.starts_on and b.finished_month < pe.ends_before
        ) as finished,
        sum(b.handling_working_days) filter (
            where b.finished_month >= pe.starts_on and b.finished_month < pe.ends_before
        ) as handling_working_days
    from handling_base as b
    inner join periods as pe
        on (b.received_month >= pe.starts_on and b.received_month < pe.ends_before)
        or (b.finished_month >= pe.starts_on and b.finished_month < pe.ends_before)
    inner join rollup as ru on ru.period = pe.period and ru.unit_id = b.unit_id
    group by all
),

-- Petitions, by first receipt; judged at the period's end when still open -------------------

-- Counted per unit first, then rolled up (the counts add up; rolling up each petition first
-- joined every petition to every ancestor).
petition_by_unit as (
    select
        p.unit_id,
        pe.period,
        count(*) as petitions,
        count(*) filter (
            where (p.is_handled and p.handled_at < pe.ends_at and p.is_handled_on_time)
               or ((not p.is_handled or p.handled_at >= pe.ends_at) and p.resolve_due_at >= pe.ends_at)
        ) as petitions_on_time,
        count(*) filter (where p.is_handled and p.handled_at < pe.ends_at) as handled,
        count(*) filter (
            where p.is_handled and p.handled_at < pe.ends_at
              and not (p.is_disliked or p.is_re_raised or not p.is_handled_on_time)
        ) as handled_satisfied,
        count(*) filter (where p.category = 'rules_and_procedures') as about_procedures,
        count(*) filter (where p.category = 'staff_behaviour') as about_staff
    from petitions as p
    inner join periods as pe on p.first_received_at >= pe.starts_at and p.first_received_at < pe.ends_at
    group by all
),

petition_counts as (
    select
        ru.rollup_unit_id as unit_id,
        p.period,
        sum(p.petitions)::bigint as petitions,
        sum(p.petitions_on_time)::bigint as petitions_on_time,
        sum(p.handled)::bigint as handled,
        sum(p.handled_satisfied)::bigint as handled_satisfied,
        sum(p.about_procedures)::bigint as about_procedures,
        sum(p.about_staff)::bigint as about_staff
    from petition_by_unit as p
    inner join rollup as ru on ru.period = p.period and ru.unit_id = p.unit_id
    group by ru.rollup_unit_id, p.period
),

-- Procedures of a unit's level (Cấp Tỉnh: level 2, Cấp Cơ sở: level 3), per unit and period ---

-- Units and periods with dossiers received or handled, or petitions: the rows of the result.
active as (
    select unit_id, period from receipt_counts
    union
    select unit_id, period from handling
    union
    select unit_id, period from petition_counts
),

unit_periods as (
    select distinct ru.rollup_unit_id as unit_id, ru.period, u.unit_level, u.parent_unit_id is null as is_top
    from rollup as ru
    inner join periods as pe on pe.period = ru.period
    inner join units as u
        on u.unit_id = ru.rollup_unit_id
        and u.valid_from < pe.ends_before and (u.valid_to is null or u.valid_to >= pe.starts_on)
),

-- Each unit valid at the period's end carries the procedures of its level (Cấp Tỉnh: level 2,
-- Cấp Cơ sở: level 3), for itself and its ancestors: a parent sums the instances below it.
-- What a procedure contributes depends on the level and period alone, except the three counts
-- of how the unit used it (online dossiers, online payment, fee lists): those are counted per
-- unit from its dossiers, the rest once per level and period and multiplied by the units.
level_procedures as (
    select
        case p.authority_level when 'Cấp Tỉnh' then 2 when 'Cấp Cơ sở' then 3 end as unit_level,
        pe.period,
        p.procedure_code,
        p.has_all_mandatory_components,
        p.service_level in ('full_online', 'partly_online') as is_online_service,
        p.is_fee_bearing,
        p.is_population_data_connected,
        coalesce(p.announced_on >= pe.starts_on and p.announced_on < pe.ends_before, false) as is_announced,
        ann.working_day_number + 20 <= eff.working_day_number as is_announced_on_time,
        p.posted_on is not null and post.working_day_number <= ann.working_day_number + 10 as is_posted_on_time
    from procedures as p
    cross join periods as pe
    left join calendar as ann on ann.calendar_date = p.announced_on
    left join calendar as eff on eff.calendar_date = p.legal_basis_effective_on
    left join calendar as post on post.calendar_date = p.posted_on
    where p.authority_level in ('Cấp Tỉnh', 'Cấp Cơ sở')
),

level_counts as (
    select
        unit_level,
        period,
        count(*) as procedures,
        count(*) filter (where has_all_mandatory_components) as content_full,
        count(*) filter (where is_online_service) as online_services,
        count(*) filter (where is_fee_bearing) as fee_bearing,
        count(*) filter (where is_population_data_connected) as population_connected,
        count(*) filter (where is_announced) as announced,
        count(*) filter (where is_announced and is_announced_on_time) as announced_on_time,
        count(*) filter (where is_announced and is_posted_on_time) as posted_on_time
    from level_procedures
    group by all
),

-- The units valid at the period's end below (or equal to) each unit with something to score.
owners as (
    select ru.rollup_unit_id as unit_id, ru.period, ru.unit_id as owner_unit_id, u.unit_level
    from rollup as ru
    inner join periods as pe on pe.period = ru.period
    inner join units as u
        on u.unit_id = ru.unit_id
        and u.valid_from < pe.ends_before
        and (u.valid_to is null or u.valid_to >= cast(pe.ends_before - 1 as date))
    -- only where there is something to score (the calendar of periods runs to 2030)
    semi join active as a on a.unit_id = ru.rollup_unit_id and a.period = ru.period
),

-- How each unit used each procedure in the period (its own dossiers only, and those of the
-- units it carries after a reorganisation).
procedure_use as (
    select
        ru.rollup_unit_id as owner_unit_id,
        pe.period,
        b.procedure_code,
        sum(b.online) > 0 as has_online_dossier,
        sum(b.paid_online) > 0 as has_paid_online,
        sum(b.with_fee_list) = sum(b.received) as all_carry_fee_list
    from receipt_base as b
    inner join periods as pe on b.month >= pe.starts_on and b.month < pe.ends_before
    inner join rollup as ru on ru.period = pe.period and ru.unit_id = b.unit_id and ru.distance = 0
    group by all
),

-- Per owner: the procedures of its level it used, counted once per owner (and level) and then
-- summed over the units above it.
owner_used as (
    select
        o.owner_unit_id,
        o.period,
        o.unit_level,
        count(*) filter (where lp.is_online_service and pu.has_online_dossier) as online_services_used,
        count(*) filter (where lp.is_fee_bearing and pu.has_paid_online) as fee_bearing_paid_online,
        count(*) filter (where lp.is_fee_bearing and pu.all_carry_fee_list) as fee_bearing_with_list
    from (select distinct owner_unit_id, period, unit_level from owners) as o
    inner join procedure_use as pu on pu.owner_unit_id = o.owner_unit_id and pu.period = o.period
    inner join level_procedures as lp
        on lp.unit_level = o.unit_level and lp.period = o.period and lp.procedure_code = pu.procedure_code
    group by all
),

owner_use as (
    select
        o.unit_id,
        o.period,
        sum(x.online_services_used)::bigint as online_services_used,
        sum(x.fee_bearing_paid_online)::bigint as fee_bearing_paid_online,
        sum(x.fee_bearing_with_list)::bigint as fee_bearing_with_list
    from owners as o
    inner join owner_used as x
        on x.owner_unit_id = o.owner_unit_id and x.period = o.period and x.unit_level = o.unit_level
    group by o.unit_id, o.period
),

procedure_counts as (
    select
        c.*,
        coalesce(u.online_services_used, 0) as online_services_used,
        coalesce(u.fee_bearing_paid_online, 0) as fee_bearing_paid_online,
        coalesce(u.fee_bearing_with_list, 0) as fee_bearing_with_list
    from (
        select
            o.unit_id,
            o.period,
            sum(lc.procedures)::bigint as procedures,
            sum(lc.content_full)::bigint as content_full,
            sum(lc.online_services)::bigint as online_services,
            sum(lc.fee_bearing)::bigint as fee_bearing,
            sum(lc.population_connected)::bigint as population_connected,
            sum(lc.announced)::bigint as announced,
            sum(lc.announced_on_time)::bigint as announced_on_time,
            sum(lc.posted_on_time)::bigint as posted_on_time
        from owners as o
        inner join level_counts as lc on lc.unit_level = o.unit_level and lc.period = o.period
        group by o.unit_id, o.period
    ) as c
    left join owner_use as u on u.unit_id = c.unit_id and u.period = c.period
),

-- Together ----------------------------------------------------------------------------------

joined as (
    select
        up.unit_id,
        up.period,
        up.is_top,
        rc.*  exclude (unit_id, period),
        sc.synced_in_time,
        nc.national_received,
        h.handled_or_open,
        h.on_time,
        h.finished,
        h.handling_working_days,
        pc.* exclude (unit_id, period),
        pt.* exclude (unit_id, period)
    from unit_periods as up
    left join receipt_counts as rc on rc.unit_id = up.unit_id and rc.period = up.period
    left join sync_counts as sc on sc.unit_id = up.unit_id and sc.period = up.period
    left join national_counts as nc on nc.unit_id = up.unit_id and nc.period = up.period
    left join handling as h on h.unit_id = up.unit_id and h.period = up.period
    left join procedure_counts as pc on pc.unit_id = up.unit_id and pc.period = up.period
    left join petition_counts as pt on pt.unit_id = up.unit_id and pt.period = up.period
    where rc.received is not null or h.handled_or_open is not null or pt.petitions is not null
),

long as (
    unpivot (
        select
            unit_id,
            period,
            is_top,
            struct_pack(n := coalesce(announced_on_time, 0), d := coalesce(announced, 0)) as PUBLISH_ON_TIME,
            struct_pack(n := coalesce(posted_on_time, 0), d := coalesce(announced, 0)) as PUBLIC_UPDATE_ON_TIME,
            struct_pack(n := coalesce(content_full, 0), d := coalesce(procedures, 0)) as PUBLIC_CONTENT_FULL,
            struct_pack(
                n := coalesce(synced_in_time, 0),
                d := greatest(coalesce(national_received, 0), coalesce(received, 0))
            ) as DOSSIER_SYNC,
            struct_pack(n := coalesce(on_time, 0), d := coalesce(handled_or_open, 0)) as ON_TIME_HANDLING,
            struct_pack(n := coalesce(online_services, 0), d := coalesce(procedures, 0)) as ONLINE_SERVICE_PROVIDED,
            struct_pack(n := coalesce(online_services_used, 0), d := coalesce(online_services, 0)) as ONLINE_SERVICE_WITH_DOSSIER,
            struct_pack(n := coalesce(online, 0), d := coalesce(received, 0)) as ONLINE_DOSSIER_SHARE,
            struct_pack(n := coalesce(obligation_paid_online, 0), d := coalesce(obligation, 0)) as ONLINE_PAYMENT_DOSSIER,
            struct_pack(n := coalesce(fee_bearing_paid_online, 0), d := coalesce(fee_bearing, 0)) as ONLINE_PAYMENT_FORMALITY,
            struct_pack(n := coalesce(fee_bearing_with_list, 0), d := coalesce(fee_bearing, 0)) as FEE_FORMALITY_WITH_DOSSIER,
            struct_pack(n := coalesce(paper_results_electronic, 0), d := coalesce(paper_results, 0)) as ORIGINAL_RESULT_AVAILABLE,
            struct_pack(n := coalesce(digitised, 0), d := coalesce(received, 0)) as SO_HOA_GIAY_TO_GIAI_QUYET,
            struct_pack(n := coalesce(replaceable_reused, 0), d := coalesce(replaceable, 0)) as REUSED_DIGITIZED_DATA,
            struct_pack(n := coalesce(online_store_linked, 0), d := coalesce(online, 0)) as SYNCED_WITH_DVCQG_PERSONAL_STORAGE,
            struct_pack(n := coalesce(population, 0), d := coalesce(received, 0)) as CITIZEN_DATA_CONNECTED_DOSSIER,
            struct_pack(n := coalesce(population_connected, 0), d := coalesce(procedures, 0)) as CITIZEN_DATA_CONNECTED_FORMALITY,
            struct_pack(n := coalesce(petitions_on_time, 0), d := coalesce(petitions, 0)) as PETITION_PROCESSING_ON_TIME,
            struct_pack(n := coalesce(handled_satisfied, 0), d := coalesce(handled, 0)) as PETITION_HANDLING_SATISFACTION,
            struct_pack(n := coalesce(not_unsatisfied, 0), d := coalesce(received, 0)) as DOSSIER_RECEIVING_SATISFACTION,
            struct_pack(n := coalesce(about_procedures, 0), d := coalesce(petitions, 0)) as PETITION_CLASSIFICATION_TTHC,
            struct_pack(n := coalesce(about_staff, 0), d := coalesce(petitions, 0)) as PETITION_CLASSIFICATION_STAFF,
            struct_pack(n := coalesce(handling_working_days, 0), d := coalesce(finished, 0)) as AVERAGE_HANDLING_DAYS,
            struct_pack(n := coalesce(in_person, 0), d := coalesce(received, 0)) as CHANNEL_SHARE_IN_PERSON,
            struct_pack(n := coalesce(postal, 0), d := coalesce(received, 0)) as CHANNEL_SHARE_POSTAL
        from joined
    )
    on columns(* exclude (unit_id, period, is_top))
    into name indicator value counts
),

-- The methodology version in force for each period.
in_force as (
    select * from {{ ref('int_methodology_by_period') }}
)

select
    l.unit_id,
    l.period,
    l.indicator,
    cast(l.counts.n as double) as numerator,
    cast(l.counts.d as double) as denominator,
    l.is_top,
    f.methodology
from long as l
inner join in_force as f using (period)

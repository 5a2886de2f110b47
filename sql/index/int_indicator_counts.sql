{{ config(materialized='table', tags=['index']) }}
-- One row per unit × period × indicator: numerator and denominator of SPEC §4, counted for the
-- unit itself and rolled up to every ancestor (sums of counts, never averages of ratios), with
-- the methodology version in force for the period. Period attribution per indicator:
-- receipt (dossiers received in the period), handled_or_open (ON_TIME_HANDLING), announcement
-- (PUBLISH_*), first_receipt (petitions), as_of_now (catalogue state today).
-- Whatever is judged "at the end of the period" (open dossiers and petitions, lateness) is
-- judged at the period's `judged_as_of` (int_period_judgement): its end, or the data watermark
-- while it runs.

with

periods as (
    select * from {{ ref('int_period_judgement') }}
),

rollup as (
    select * from {{ ref('int_units_rolled_up_by_period') }}
),

-- the units valid at each period's end (the period's tree)
units as (
    select * from {{ ref('int_units_by_period') }}
    where is_valid_at_end
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

-- ON_TIME_HANDLING, AVERAGE_HANDLING_DAYS and the lateness of DOSSIER_RECEIVING_SATISFACTION,
-- per unit and months received, finished and late since. A dossier is late at a judging moment
-- T when fct_dossiers.late_since < T: at a period's end that is exact by months (late since a
-- month before the month after the end); at the data watermark, by months except for the
-- watermark's own month, whose late dossiers are read from the facts with their exact time.
handling_base as (
    select
        unit_id, received_month, finished_month, late_month,
        dossiers, finished, handling_working_days, not_rated_unsatisfied,
        null::boolean as late_at_watermark
    from {{ ref('int_dossier_handling_by_month') }}
    union all
    select
        unit_id, received_month, finished_month, late_month,
        count(*) as dossiers,
        count(finished_at) as finished,
        coalesce(sum(handling_working_days), 0) as handling_working_days,
        count(*) filter (where not is_rated_unsatisfied) as not_rated_unsatisfied,
        late_since < (select max(data_watermark) from periods) as late_at_watermark
    from {{ ref('fct_dossiers') }}
    where late_month = (select max(watermark_month) from periods)
      and not is_withdrawn and received_at is not null
    group by all
),

-- Receipt-attributed counts per unit and month (the procedure's attributes that decide which
-- receipts count for the result-on-paper and replaceable-components indicators are those of
-- its catalogue version at receipt, in the per-month model).
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
        sum(b.paper_results) as paper_results,
        sum(b.paper_results_electronic) as paper_results_electronic,
        sum(b.digitised) as digitised,
        sum(b.replaceable) as replaceable,
        sum(b.replaceable_reused) as replaceable_reused,
        sum(b.online_store_linked) as online_store_linked,
        sum(b.population) as population,
        sum(b.not_rated_unsatisfied) as not_rated_unsatisfied
    from receipt_base as b
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
        sum(r.not_rated_unsatisfied) as not_rated_unsatisfied
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

-- DOSSIER_SYNC in a period that runs: a dossier whose verdict fails at or after the data
-- watermark (fct_dossiers.sync_fails_at_*: a change not on the portal yet whose window is still
-- open) is pending, not failed, and counted synced. Only such dossiers are read from the facts
-- (their moment is within a window of the watermark).
sync_pending as (
    select ru.rollup_unit_id as unit_id, x.period, count(*) as pending
    from (
        select
            d.unit_id,
            pe.period,
            pe.data_watermark,
            case pe.period_type
                when 'month' then d.sync_fails_at_month
                when 'quarter' then d.sync_fails_at_quarter
                else d.sync_fails_at_year
            end as fails_at
        from {{ ref('fct_dossiers') }} as d
        inner join periods as pe
            on pe.is_live and d.received_month >= pe.starts_on and d.received_month < pe.ends_before
        where greatest(d.sync_fails_at_month, d.sync_fails_at_quarter, d.sync_fails_at_year)
            >= (select max(data_watermark) from periods)
    ) as x
    inner join rollup as ru on ru.period = x.period and ru.unit_id = x.unit_id
    where x.fails_at >= x.data_watermark
    group by all
),

-- DOSSIER_SYNC's denominator, the larger of the national report's and the portal's received
-- count, taken per unit and month and then summed: a parent's, a quarter's or a year's is the
-- sum of its parts (the larger of two sums would be below it when the report is larger for one
-- unit or month and the portal for another).
sync_denominator_unit_month as (
    select
        coalesce(r.unit_id, n.unit_id) as unit_id,
        coalesce(r.month, n.month) as month,
        greatest(coalesce(r.received, 0), coalesce(n.received_count, 0)) as sync_denominator
    from (
        select unit_id, month, sum(received) as received from receipt_base group by all
    ) as r
    full join (
        select unit_id, cast(period || '-01' as date) as month, sum(received_count) as received_count
        from national
        group by all
    ) as n on n.unit_id = r.unit_id and n.month = r.month
),

sync_denominators as (
    select ru.rollup_unit_id as unit_id, pe.period, sum(s.sync_denominator) as sync_denominator
    from sync_denominator_unit_month as s
    inner join periods as pe on s.month >= pe.starts_on and s.month < pe.ends_before
    inner join rollup as ru on ru.period = pe.period and ru.unit_id = s.unit_id
    group by all
),

handling as (
    select
        ru.rollup_unit_id as unit_id,
        b.period,
        sum(b.dossiers) as handled_or_open,
        coalesce(sum(b.dossiers) filter (where not b.is_late_at_judgement), 0) as on_time,
        -- DOSSIER_RECEIVING_SATISFACTION: received in the period, not rated unsatisfied, late
        coalesce(sum(b.not_rated_unsatisfied) filter (where b.is_received_in_period and b.is_late_at_judgement), 0)
            as late_not_rated_unsatisfied,
        -- AVERAGE_HANDLING_DAYS (shown, not scored): dossiers finished in the period
        sum(b.finished) filter (where b.is_finished_in_period) as finished,
        sum(b.handling_working_days) filter (where b.is_finished_in_period) as handling_working_days
    from (
        select
            b.*,
            pe.period,
            b.received_month >= pe.starts_on and b.received_month < pe.ends_before as is_received_in_period,
            coalesce(b.finished_month >= pe.starts_on and b.finished_month < pe.ends_before, false) as is_finished_in_period,
            coalesce(
                b.late_at_watermark,
                b.late_month < case when pe.is_live then pe.watermark_month else pe.ends_before end,
                false
            ) as is_late_at_judgement
        from handling_base as b
        inner join periods as pe
            on ((b.received_month >= pe.starts_on and b.received_month < pe.ends_before)
                or (b.finished_month >= pe.starts_on and b.finished_month < pe.ends_before))
            -- a live period reads the watermark month's late dossiers by their exact time only
            and case
                when b.late_at_watermark is null then not (pe.is_live and b.late_month is not distinct from pe.watermark_month)
                else pe.is_live
            end
    ) as b
    inner join rollup as ru on ru.period = b.period and ru.unit_id = b.unit_id
    group by all
),

-- Petitions, by first receipt; judged at the period's judging moment (fct_petitions.late_since) --

-- Counted per unit first, then rolled up (the counts add up; rolling up each petition first
-- joined every petition to every ancestor).
petition_by_unit as (
    select
        p.unit_id,
        pe.period,
        count(*) as petitions,
        count(*) filter (where not coalesce(p.late_since < pe.judged_as_of, false)) as petitions_on_time,
        count(*) filter (where p.handled_at < pe.judged_as_of) as handled,
        count(*) filter (
            where p.handled_at < pe.judged_as_of
              and not (p.is_disliked or p.is_re_raised or coalesce(p.late_since < pe.judged_as_of, false))
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

-- The rows of the result: every unit valid at the end of every reported period (from the first
-- month with a dossier to the period the data watermark is in), whether or not it has records
-- there (its indicators then follow the zero-denominator rules), and any unit and period with
-- dossiers received or handled, or petitions. A unit is the version valid at the period's end:
-- one row however many versions overlap the period.
unit_periods as (
    select u.unit_id, pe.period, u.unit_level, u.parent_unit_id is null as is_top, pe.is_reported
    from periods as pe
    inner join units as u on u.period = pe.period
),

active as (
    select unit_id, period from receipt_counts
    union
    select unit_id, period from handling
    union
    select unit_id, period from petition_counts
),

scored_unit_periods as (
    select up.unit_id, up.period
    from unit_periods as up
    where up.is_reported
    union
    select unit_id, period from active
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
    -- the catalogue's version in force on the day each period is judged at
    from periods as pe
    inner join procedures as p
        on p.valid_from <= pe.judged_on
        and (p.valid_to is null or p.valid_to > pe.judged_on)
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
    inner join units as u on u.unit_id = ru.unit_id and u.period = ru.period
    -- only the rows of the result (the calendar of periods runs to 2030)
    semi join scored_unit_periods as a on a.unit_id = ru.rollup_unit_id and a.period = ru.period
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
        coalesce(sc.synced_in_time, 0) + coalesce(sp.pending, 0) as synced_in_time,
        sd.sync_denominator,
        h.handled_or_open,
        h.on_time,
        h.late_not_rated_unsatisfied,
        h.finished,
        h.handling_working_days,
        pc.* exclude (unit_id, period),
        pt.* exclude (unit_id, period)
    from unit_periods as up
    left join receipt_counts as rc on rc.unit_id = up.unit_id and rc.period = up.period
    left join sync_counts as sc on sc.unit_id = up.unit_id and sc.period = up.period
    left join sync_pending as sp on sp.unit_id = up.unit_id and sp.period = up.period
    left join sync_denominators as sd on sd.unit_id = up.unit_id and sd.period = up.period
    left join handling as h on h.unit_id = up.unit_id and h.period = up.period
    left join procedure_counts as pc on pc.unit_id = up.unit_id and pc.period = up.period
    left join petition_counts as pt on pt.unit_id = up.unit_id and pt.period = up.period
    where up.is_reported or rc.received is not null or h.handled_or_open is not null or pt.petitions is not null
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
                d := coalesce(sync_denominator, 0)
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
            struct_pack(
                n := coalesce(not_rated_unsatisfied, 0) - coalesce(late_not_rated_unsatisfied, 0),
                d := coalesce(received, 0)
            ) as DOSSIER_RECEIVING_SATISFACTION,
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

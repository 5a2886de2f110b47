{{ config(materialized='view', tags=['drilldown']) }}
-- One row per unit × period × dossier indicator × dossier in its denominator (unit_id, period,
-- indicator, dossier_id), with whether the dossier is in the numerator: the records behind
-- every dossier count of int_indicator_counts, by the same rules, at every level of the tree.
-- A view: filter it by unit and period. DOSSIER_SYNC's denominator is the larger of these
-- dossiers and the national report's count, which has no records to list.
--
-- Every query of the view reads every dossier, whatever it is filtered on. A reader that wants
-- one unit's records of one period may say so first, and only the dossiers that can be among
-- them are read (the console does; 95 ms to 13 ms for a base unit's month at 1 M dossiers):
--   SET VARIABLE drill_unit_id = 'TP12'; SET VARIABLE drill_period = '2026-08';
-- then filter on the same unit and period. The period alone scopes to it (for the top of the
-- tree, whose units are all of them); the unit needs its period. Unset (the default), the
-- view lists everything.

with

-- each period with the moment its rules judge it at (its end, or the data watermark); only the
-- scoped one when there is a scope, so that the joins below are planned on it whatever the
-- engine's estimates (DuckDB 2.0.0 joined the dossiers to every period first: counting the top
-- of the tree's DOSSIER_SYNC records of a year at 1 M dossiers took 444 ms instead of 61)
periods as (
    select * from {{ ref('int_period_judgement') }}
    where is_scored
      and (getvariable('drill_period') is null or period = getvariable('drill_period'))
),

rollup as (
    select * from {{ ref('int_units_rolled_up_by_period') }}
    where (getvariable('drill_period') is null or period = getvariable('drill_period'))
      and (getvariable('drill_unit_id') is null or rollup_unit_id = getvariable('drill_unit_id'))
),

-- the period the reader scoped the view to, if any
scope as (
    select starts_at, ends_at from periods where period = getvariable('drill_period')
),

-- the dossiers received or finished in the scoped period, of the units rolled up to the
-- scoped unit (every dossier the branches below can keep for them); all without a scope
dossiers as not materialized (
    select
        d.*,
        -- what a reader sees of the dossier, carried along each indicator's rows (rather than
        -- joined back to the dossiers: that second read of them was two thirds of a query)
        struct_pack(
            handling_unit_id := d.unit_id, procedure_code := d.procedure_code,
            received_at := d.received_at, due_at := d.due_at, finished_at := d.finished_at,
            status := d.status, lake_file := d.lake_file, lake_row := d.lake_row
        ) as record
    from {{ ref('fct_dossiers') }} as d
    where (
        getvariable('drill_period') is null
        or (d.received_at >= (select starts_at from scope) and d.received_at < (select ends_at from scope))
        or (d.finished_at >= (select starts_at from scope) and d.finished_at < (select ends_at from scope))
    )
    and (
        getvariable('drill_unit_id') is null
        or d.unit_id in (
            select unit_id from rollup
            where rollup_unit_id = getvariable('drill_unit_id') and period = getvariable('drill_period')
        )
    )
),

received as not materialized (
    select
        ru.rollup_unit_id as rollup_unit_id,
        pe.period,
        pe.period_type,
        pe.judged_as_of,
        pe.is_live,
        pe.data_watermark,
        d.*,
        case pe.period_type
            when 'month' then d.sync_fails_at_month
            when 'quarter' then d.sync_fails_at_quarter
            else d.sync_fails_at_year
        end as sync_fails_at,
        coalesce(d.is_result_paper, false) as is_procedure_result_paper,
        coalesce(d.is_procedure_replaceable, false) as is_procedure_replaceable_at_receipt
    from dossiers as d
    inner join periods as pe on d.received_at >= pe.starts_at and d.received_at < pe.ends_at
    inner join rollup as ru on ru.period = pe.period and ru.unit_id = d.unit_id
),

handled as (
    select
        ru.rollup_unit_id,
        pe.period,
        d.dossier_id,
        d.record,
        -- on time at the judging moment: fct_dossiers.late_since, as the index reads it
        not coalesce(d.late_since < pe.judged_as_of, false) as in_numerator
    from dossiers as d
    inner join periods as pe
        on (d.received_at >= pe.starts_at and d.received_at < pe.ends_at)
        or (d.finished_at >= pe.starts_at and d.finished_at < pe.ends_at)
    inner join rollup as ru on ru.period = pe.period and ru.unit_id = d.unit_id
    where not d.is_withdrawn and d.received_at is not null
),

listed as (
    -- fct_dossiers.sync_fails_at_*, as the index reads it: synced when it never fails, or, in a
    -- period that runs, when it fails at the watermark or later (pending)
    select rollup_unit_id, period, 'DOSSIER_SYNC' as indicator, dossier_id, record,
        sync_fails_at is null or (is_live and sync_fails_at >= data_watermark) as in_numerator
    from received
    union all
    select rollup_unit_id, period, 'ON_TIME_HANDLING', dossier_id, record, in_numerator
    from handled
    union all
    select rollup_unit_id, period, 'ONLINE_DOSSIER_SHARE', dossier_id, record, coalesce(is_online, false)
    from received
    union all
    select rollup_unit_id, period, 'ONLINE_PAYMENT_DOSSIER', dossier_id, record, coalesce(is_paid_online, false)
    from received
    where has_financial_obligation
    union all
    select rollup_unit_id, period, 'ORIGINAL_RESULT_AVAILABLE', dossier_id, record, has_electronic_result
    from received
    where finished_at is not null and status_code in ('9', '10') and is_procedure_result_paper
    union all
    select rollup_unit_id, period, 'SO_HOA_GIAY_TO_GIAI_QUYET', dossier_id, record, coalesce(is_digitised, false)
    from received
    union all
    select rollup_unit_id, period, 'REUSED_DIGITIZED_DATA', dossier_id, record, has_reused_component
    from received
    where is_procedure_replaceable_at_receipt
    union all
    select rollup_unit_id, period, 'SYNCED_WITH_DVCQG_PERSONAL_STORAGE', dossier_id, record, has_store_component or has_electronic_result
    from received
    where is_online
    union all
    select rollup_unit_id, period, 'CITIZEN_DATA_CONNECTED_DOSSIER', dossier_id, record, uses_population_data
    from received
    union all
    select rollup_unit_id, period, 'CHANNEL_SHARE_IN_PERSON', dossier_id, record, coalesce(channel = 'in_person', false)
    from received
    union all
    select rollup_unit_id, period, 'CHANNEL_SHARE_POSTAL', dossier_id, record, coalesce(channel = 'postal', false)
    from received
    union all
    select rollup_unit_id, period, 'DOSSIER_RECEIVING_SATISFACTION', dossier_id, record,
        not (is_rated_unsatisfied or coalesce(late_since < judged_as_of, false))
    from received
)

select
    l.rollup_unit_id as unit_id,
    l.period,
    l.indicator,
    l.dossier_id,
    l.in_numerator,
    l.record.handling_unit_id,
    l.record.procedure_code,
    l.record.received_at,
    l.record.due_at,
    l.record.finished_at,
    l.record.status,
    l.record.lake_file,
    l.record.lake_row
from listed as l
-- scoped: that period and unit only (a filter on another lists nothing, never a part of it)
where (getvariable('drill_period') is null or l.period = getvariable('drill_period'))
  and (getvariable('drill_unit_id') is null or l.rollup_unit_id = getvariable('drill_unit_id'))

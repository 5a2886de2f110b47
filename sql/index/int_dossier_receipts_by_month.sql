{{ config(materialized='incremental', unique_key='month', tags=['index'],
    pre_hook="{% if is_incremental() %}SET VARIABLE int_dossier_receipts_by_month_since = (SELECT max(facts_built_at) FROM {{ this }}){% endif %}") }}
-- depends_on: {{ ref('int_dossier_counts_by_month') }} (read by the incremental branch only; dbt needs the hint)
-- One row per unit × month of receipt × procedure (unit_id, month, procedure_code): the
-- receipt-attributed dossier counts the index sums over the months of a period.
-- DOSSIER_SYNC counts are here too: a dossier counts for its receipt month, quarter and year
-- (flags per receipt period in fct_dossiers).
--
-- Incremental, by month of receipt (every row belongs to one; a row without a unit marks a
-- month left empty): the months recomputed are those of the dossiers fct_dossiers rebuilt
-- since this model last read it (`built_at`; all of them when this model holds no row yet), and any month whose number of dossiers
-- (int_dossier_counts_by_month) no longer matches what is kept here: a dossier whose receipt
-- time moved leaves a month that nothing rebuilt points at, and only that count shows it (a
-- dossier that moved in, or a new one, makes the month rebuilt anyway).

with

facts as not materialized (
    select * from {{ ref('fct_dossiers') }}
),

-- DOSSIER_SYNC's sync window for a dossier received in each month: that of the methodology in
-- force for the month, for its quarter and for its year (each period judged by its own).
windows as (
    select
        pe.starts_on as month,
        mm.sync_window_hours as window_month,
        mq.sync_window_hours as window_quarter,
        my.sync_window_hours as window_year
    from {{ ref('dim_periods') }} as pe
    inner join {{ ref('int_methodology_by_period') }} as mm on mm.period = pe.period
    inner join {{ ref('int_methodology_by_period') }} as mq
        on mq.period = strftime(pe.starts_on, '%Y') || '-Q' || cast(quarter(pe.starts_on) as varchar)
    inner join {{ ref('int_methodology_by_period') }} as my on my.period = strftime(pe.starts_on, '%Y')
    where pe.period_type = 'month'
),

{% if is_incremental() %}
months as materialized (
    select received_month as month
    from facts
    where (built_at > getvariable('int_dossier_receipts_by_month_since') or getvariable('int_dossier_receipts_by_month_since') is null) and received_at is not null
    union
    select coalesce(f.month, k.month) as month
    from (
        select received_month as month, sum(dossiers) as dossiers
        from {{ ref('int_dossier_counts_by_month') }}
        where received_month is not null
        group by all
    ) as f
    full join (
        select month as month, sum(received) as dossiers from {{ this }} group by all
    ) as k on k.month = f.month
    where coalesce(f.dossiers, 0) <> coalesce(k.dossiers, 0)
    union
    -- months counted under a sync window that is no longer the one in force
    select k.month
    from (
        select distinct month, sync_window_hours_month, sync_window_hours_quarter, sync_window_hours_year
        from {{ this }}
    ) as k
    left join windows as w on w.month = k.month
    where k.sync_window_hours_month is distinct from w.window_month
       or k.sync_window_hours_quarter is distinct from w.window_quarter
       or k.sync_window_hours_year is distinct from w.window_year
),

-- A filter against the (few) months as a list, not a semi join: DuckDB 2.0.0 built the join's
-- hash table on the 10 M facts (2.4 s, 1.3 GB more memory).
dossiers as not materialized (
    select * from facts
    where list_contains((select list(month) from months), received_month)
),
{% else %}
dossiers as not materialized (
    select * from facts
),
{% endif %}

counted as (
    select
        unit_id,
        received_month as month,
        procedure_code,
        count(*) as received,
        count(*) filter (where is_online) as online,
        count(*) filter (where channel = 'in_person') as in_person,
        count(*) filter (where channel = 'postal') as postal,
        count(*) filter (where has_financial_obligation) as obligation,
        count(*) filter (where has_financial_obligation and is_paid_online) as obligation_paid_online,
        count(*) filter (where finished_at is not null and status_code in ('9', '10')) as with_result,
        count(*) filter (where finished_at is not null and status_code in ('9', '10') and has_electronic_result) as with_result_electronic,
        -- ORIGINAL_RESULT_AVAILABLE and REUSED_DIGITIZED_DATA, by the procedure's catalogue
        -- version in force at receipt (fct_dossiers)
        count(*) filter (where finished_at is not null and status_code in ('9', '10') and is_result_paper) as paper_results,
        count(*) filter (where finished_at is not null and status_code in ('9', '10') and is_result_paper and has_electronic_result) as paper_results_electronic,
        count(*) filter (where is_procedure_replaceable) as replaceable,
        count(*) filter (where is_procedure_replaceable and has_reused_component) as replaceable_reused,
        count(*) filter (where is_digitised) as digitised,
        count(*) filter (where has_reused_component) as reused,
        count(*) filter (where is_online and (has_store_component or has_electronic_result)) as online_store_linked,
        count(*) filter (where uses_population_data) as population,
        -- DOSSIER_RECEIVING_SATISFACTION before lateness, which depends on the judging moment
        -- (int_indicator_counts subtracts the late ones from int_dossier_handling_by_month)
        count(*) filter (where not is_rated_unsatisfied) as not_rated_unsatisfied,
        count(*) filter (where is_paid_online) as paid_online,
        count(*) filter (where has_fee_list) as with_fee_list,
        -- DOSSIER_SYNC: a dossier received in the period counts when it had status changes
        -- in the period and every one reached the portal within the sync window (the longest
        -- delay and the first change not arrived, per receipt period, are in fct_dossiers).
        -- A change not arrived fails the period here; int_indicator_counts counts it pending
        -- in a period that runs while its window is open.
        count(*) filter (where sync_first_unarrived_at_in_receipt_month is null and sync_delay_hours_in_receipt_month <= w.window_month) as synced_month,
        count(*) filter (where sync_first_unarrived_at_in_receipt_quarter is null and sync_delay_hours_in_receipt_quarter <= w.window_quarter) as synced_quarter,
        count(*) filter (where sync_first_unarrived_at_in_receipt_year is null and sync_delay_hours_in_receipt_year <= w.window_year) as synced_year
    from dossiers as d
    inner join windows as w on w.month = d.received_month
    where d.received_at is not null
    group by all
),

-- A recomputed month left without dossiers gets one row with no unit and zero counts, so that
-- the rows it had are replaced (delete+insert replaces the months present in the new rows).
with_empty_months as (
    select * from counted
    {% if is_incremental() %}
    union all by name
    select m.month, 0 as received
    from months as m
    where m.month not in (select month from counted)
    {% endif %}
)

select
    c.*,
    w.window_month as sync_window_hours_month,
    w.window_quarter as sync_window_hours_quarter,
    w.window_year as sync_window_hours_year,
    (select max(built_at) from facts) as facts_built_at
from with_empty_months as c
left join windows as w on w.month = c.month

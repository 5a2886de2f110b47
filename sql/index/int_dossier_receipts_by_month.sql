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
        -- DOSSIER_SYNC: synced for its receipt month, quarter and year when its verdict has no
        -- moment of failing (fct_dossiers.sync_fails_at_*: every change of the period reached
        -- the portal within the window of the methodology in force for it). A change still
        -- inside its window is pending, not failed, in a period that runs: int_indicator_counts
        -- adds those, by the same moment.
        count(*) filter (where sync_fails_at_month is null) as synced_month,
        count(*) filter (where sync_fails_at_quarter is null) as synced_quarter,
        count(*) filter (where sync_fails_at_year is null) as synced_year
    from dossiers as d
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
    (select max(built_at) from facts) as facts_built_at
from with_empty_months as c

{{ config(materialized='incremental', unique_key='finished_month', tags=['index'],
    pre_hook="{% if is_incremental() %}SET VARIABLE int_dossier_handling_by_procedure_month_since = (SELECT max(facts_built_at) FROM {{ this }}){% endif %}") }}
-- depends_on: {{ ref('int_dossier_counts_by_month') }} (read by the incremental branch only; dbt needs the hint)
-- One row per unit × month handling ended × procedure (unit_id, finished_month,
-- procedure_code): the finished, not-withdrawn dossiers and their working days from receipt to
-- the end of handling, behind the average handling time per procedure (SPEC §4: computed, not
-- scored). The same dossiers and days as AVERAGE_HANDLING_DAYS, by procedure.
--
-- Incremental, by month handling ended, as int_dossier_handling_by_month is by month of
-- receipt: the months recomputed are those of the dossiers fct_dossiers rebuilt since this
-- model last read it (`built_at`), and any month whose number of finished dossiers
-- (int_dossier_counts_by_month) no longer matches what is kept here (a dossier whose end
-- moved, or that was reopened, leaves a month nothing rebuilt points at).

with

facts as not materialized (
    select * from {{ ref('fct_dossiers') }}
    where not is_withdrawn and received_at is not null and finished_at is not null
),

{% if is_incremental() %}
months as materialized (
    select finished_month as month
    from facts
    where (built_at > getvariable('int_dossier_handling_by_procedure_month_since') or getvariable('int_dossier_handling_by_procedure_month_since') is null)
    union
    select coalesce(f.month, k.month) as month
    from (
        select finished_month as month, sum(dossiers) as dossiers
        from {{ ref('int_dossier_counts_by_month') }}
        where received_month is not null and finished_month is not null and not is_withdrawn
        group by all
    ) as f
    full join (
        select finished_month as month, sum(finished) as dossiers from {{ this }} group by all
    ) as k on k.month = f.month
    where coalesce(f.dossiers, 0) <> coalesce(k.dossiers, 0)
),

-- A filter against the (few) months as a list, not a semi join (see int_dossier_handling_by_month).
dossiers as not materialized (
    select * from facts
    where list_contains((select list(month) from months), finished_month)
),
{% else %}
dossiers as not materialized (
    select * from facts
),
{% endif %}

counted as (
    select
        unit_id,
        finished_month,
        procedure_code,
        count(*) as finished,
        coalesce(sum(handling_working_days), 0) as handling_working_days
    from dossiers
    group by all
),

-- A recomputed month left without finished dossiers gets one row with no unit and zero counts,
-- so that the rows it had are replaced.
with_empty_months as (
    select * from counted
    {% if is_incremental() %}
    union all by name
    select m.month as finished_month, 0 as finished, 0 as handling_working_days
    from months as m
    where m.month not in (select finished_month from counted)
    {% endif %}
)

select *, (select max(built_at) from {{ ref('fct_dossiers') }}) as facts_built_at
from with_empty_months

{{ config(materialized='view', tags=['index', 'mart']) }}
-- One row per unit × period × procedure (unit_id, period, procedure_code): the average handling
-- time in working days of the dossiers finished in the period (SPEC §4: computed, not scored),
-- for the unit itself and rolled up to every ancestor as the index is (sums of days and of
-- dossiers, never averages of averages). Summed over procedures it is AVERAGE_HANDLING_DAYS of
-- mart_index_indicator. A view: a few hundred thousand monthly rows summed when read.

select
    ru.rollup_unit_id as unit_id,
    pe.period,
    pe.period_type,
    b.procedure_code,
    p.procedure_name,
    sum(b.finished)::bigint as finished,
    sum(b.handling_working_days)::bigint as handling_working_days,
    sum(b.handling_working_days) / sum(b.finished) as average_handling_days
from {{ ref('int_dossier_handling_by_procedure_month') }} as b
inner join {{ ref('dim_periods') }} as pe
    on b.finished_month >= pe.starts_on and b.finished_month < pe.ends_before
inner join {{ ref('int_units_rolled_up_by_period') }} as ru
    on ru.period = pe.period and ru.unit_id = b.unit_id
-- the procedure's name as the catalogue has it now
left join {{ ref('stg_catalogue__procedures') }} as p on p.procedure_code = b.procedure_code and p.is_current
where b.finished > 0
group by all

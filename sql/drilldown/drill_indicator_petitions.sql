{{ config(materialized='view', tags=['drilldown']) }}
-- One row per unit × period × petition indicator × petition in its denominator (unit_id,
-- period, indicator, petition_id), with whether it is in the numerator: the records behind
-- every petition count of int_indicator_counts, at every level of the tree. A view.

with

-- each period with the moment its rules judge it at (its end, or the data watermark)
periods as (
    select * from {{ ref('int_period_judgement') }}
    where is_scored
),

rollup as (
    select * from {{ ref('int_units_rolled_up_by_period') }}
),

petitions as (
    select
        p.*,
        -- what a reader sees of the petition, carried along each indicator's rows (rather than
        -- joined back to the petitions, a second read of them)
        struct_pack(
            handling_unit_id := p.unit_id, category := p.category,
            first_received_at := p.first_received_at, handled_at := p.handled_at,
            resolve_due_at := p.resolve_due_at
        ) as record
    from {{ ref('fct_petitions') }} as p
),

raised as not materialized (
    select ru.rollup_unit_id, pe.period, pe.judged_as_of, p.*
    from petitions as p
    inner join periods as pe on p.first_received_at >= pe.starts_at and p.first_received_at < pe.ends_at
    inner join rollup as ru on ru.period = pe.period and ru.unit_id = p.unit_id
),

listed as (
    select rollup_unit_id, period, 'PETITION_PROCESSING_ON_TIME' as indicator, petition_id, record,
        -- on time at the judging moment: fct_petitions.late_since, as the index reads it
        not coalesce(late_since < judged_as_of, false) as in_numerator
    from raised
    union all
    select rollup_unit_id, period, 'PETITION_HANDLING_SATISFACTION', petition_id, record,
        not (is_disliked or is_re_raised or coalesce(late_since < judged_as_of, false))
    from raised
    where handled_at < judged_as_of
    union all
    select rollup_unit_id, period, 'PETITION_CLASSIFICATION_TTHC', petition_id, record, category = 'rules_and_procedures'
    from raised
    union all
    select rollup_unit_id, period, 'PETITION_CLASSIFICATION_STAFF', petition_id, record, category = 'staff_behaviour'
    from raised
)

select
    l.rollup_unit_id as unit_id,
    l.period,
    l.indicator,
    l.petition_id,
    l.in_numerator,
    l.record.handling_unit_id,
    l.record.category,
    l.record.first_received_at,
    l.record.handled_at,
    l.record.resolve_due_at
from listed as l

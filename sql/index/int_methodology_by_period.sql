{{ config(materialized='table', tags=['index']) }}
-- One row per period (period): the methodology version in force (the latest effective at the
-- period's first month) and the parameters the counts apply with it (DOSSIER_SYNC's sync
-- window).

with

periods as (
    select * from {{ ref('dim_periods') }}
),

methodology as (
    select * from {{ ref('methodology') }}
),

in_force as (
    select pe.period, max_by(m.methodology, m.effective_from) as methodology
    from periods as pe
    inner join (select distinct methodology, effective_from from methodology) as m
        on m.effective_from <= strftime(pe.starts_on, '%Y-%m')
    group by pe.period
)

select
    f.period,
    f.methodology,
    m.window_hours as sync_window_hours
from in_force as f
left join methodology as m on m.methodology = f.methodology and m.indicator = 'DOSSIER_SYNC'

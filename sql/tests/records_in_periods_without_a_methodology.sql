{{ config(severity='warn') }}
-- Months holding records (dossiers received or ended in them, petitions first received) that no
-- methodology version scores: they lie before the first version's effective month, so the
-- index has no rows for them (int_period_judgement.is_scored) and their records count only in
-- the later periods they also fall in. A warning: add a methodology version effective from an
-- earlier month if those months are to be scored.
with

unscored as (
    select period, starts_on, ends_before, starts_at, ends_at
    from {{ ref('int_period_judgement') }}
    where not is_scored and period_type = 'month'
),

dossiers as (
    select received_month as month, count(*) as received, 0 as ended
    from {{ ref('fct_dossiers') }}
    where received_month < (select max(ends_before) from unscored)
    group by all
    union all
    select finished_month, 0, count(*)
    from {{ ref('fct_dossiers') }}
    where finished_month < (select max(ends_before) from unscored)
    group by all
),

petitions as (
    select cast(date_trunc('month', first_received_at) as date) as month, count(*) as petitions
    from {{ ref('fct_petitions') }}
    where first_received_at < (select max(ends_at) from unscored)
    group by all
)

select u.period, coalesce(sum(d.received), 0) as dossiers_received, coalesce(sum(d.ended), 0) as dossiers_ended,
    coalesce(any_value(p.petitions), 0) as petitions
from unscored as u
left join dossiers as d on d.month = u.starts_on
left join petitions as p on p.month = u.starts_on
group by u.period
having coalesce(sum(d.received), 0) + coalesce(sum(d.ended), 0) + coalesce(any_value(p.petitions), 0) > 0

{{ config(severity='warn') }}
-- Periods holding records (dossiers received or ended in them, petitions first received) that no
-- methodology version scores: a version applies from the period whose first month is its
-- effective month (int_methodology_by_period), so the months before the first version, and the
-- quarter and year a mid-year version begins in, have no index (int_period_judgement.is_scored);
-- their records count only in the scored periods they also fall in. A warning: add a
-- methodology version effective from an earlier month if those periods are to be scored.
with

unscored as (
    select period, starts_on, ends_before
    from {{ ref('int_period_judgement') }}
    where not is_scored
      -- the periods from the first month with records on (the calendar runs from 2024 at least)
      and ends_before > (select min(received_month) from {{ ref('fct_dossiers') }})
),

-- Records per month (few rows), then summed over each period's months.
months as (
    select received_month as month, count(*) as received, 0 as ended, 0 as petitions
    from {{ ref('fct_dossiers') }}
    group by all
    union all
    select finished_month, 0, count(*), 0
    from {{ ref('fct_dossiers') }}
    where finished_month is not null
    group by all
    union all
    select cast(date_trunc('month', first_received_at) as date), 0, 0, count(*)
    from {{ ref('fct_petitions') }}
    group by all
)

select
    u.period,
    sum(m.received) as dossiers_received,
    sum(m.ended) as dossiers_ended,
    sum(m.petitions) as petitions
from unscored as u
inner join months as m on m.month >= u.starts_on and m.month < u.ends_before
group by u.period
having sum(m.received) + sum(m.ended) + sum(m.petitions) > 0

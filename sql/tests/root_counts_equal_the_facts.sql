-- Conservation up the tree: for every scored period (a methodology in force), the top of the tree (the units valid at the
-- period's end with no parent) counts exactly the records the facts hold, counted here straight
-- from fct_dossiers and fct_petitions by the index's attribution rules, not through the roll-up:
-- the dossiers received in the period (ONLINE_DOSSIER_SHARE's denominator), those received or
-- handled in it, withdrawn ones excluded (ON_TIME_HANDLING's), those received with a financial
-- obligation (ONLINE_PAYMENT_DOSSIER's denominator) and paid online (its numerator), and the
-- petitions first received in it (PETITION_PROCESSING_ON_TIME's). A record lost on the way up
-- (a unit whose chain of successors and parents reaches no unit valid at the period's end) or
-- counted twice fails it. A record whose unit has no version begun by the day the period is
-- judged with (not in the registry at all, or not yet) has no place in that period's tree: it
-- is left to the warning tests fct_dossiers_have_a_known_unit_and_procedure,
-- fct_petitions_have_a_known_unit and records_without_an_unambiguous_owner.
with

periods as (
    select * from {{ ref('int_period_judgement') }}
    where is_scored
),

-- The units with a version begun by the day each period is judged with, read from the registry,
-- not the roll-up.
existed as (
    select distinct pe.period, u.unit_id
    from periods as pe
    inner join {{ ref('dim_units') }} as u on u.valid_from <= pe.judged_on
),

-- The dossiers per unit and month received and ended (few rows), then per period.
dossier_months as (
    select
        unit_id,
        received_month,
        finished_month,
        count(*) as received,
        count(*) filter (where not is_withdrawn) as not_withdrawn,
        count(*) filter (where has_financial_obligation) as obligation,
        count(*) filter (where has_financial_obligation and is_paid_online) as obligation_paid_online
    from {{ ref('fct_dossiers') }}
    where received_at is not null
    group by all
),

facts as (
    unpivot (
        select
            pe.period,
            coalesce(sum(d.received) filter (where d.received_month >= pe.starts_on and d.received_month < pe.ends_before), 0) as received,
            sum(d.not_withdrawn) as handled_or_open,
            coalesce(sum(d.obligation) filter (where d.received_month >= pe.starts_on and d.received_month < pe.ends_before), 0) as obligation,
            coalesce(sum(d.obligation_paid_online) filter (where d.received_month >= pe.starts_on and d.received_month < pe.ends_before), 0)
                as obligation_paid_online
        from periods as pe
        inner join dossier_months as d
            on (d.received_month >= pe.starts_on and d.received_month < pe.ends_before)
            or (d.finished_month >= pe.starts_on and d.finished_month < pe.ends_before)
        semi join existed as u on u.period = pe.period and u.unit_id = d.unit_id
        group by all
    )
    on received, handled_or_open, obligation, obligation_paid_online
    into name measure value facts
    union all
    select pe.period, 'petitions' as measure, count(*) as facts
    from periods as pe
    inner join {{ ref('fct_petitions') }} as p
        on p.first_received_at >= pe.starts_at and p.first_received_at < pe.ends_at
    semi join existed as u on u.period = pe.period and u.unit_id = p.unit_id
    group by all
),

roots as (
    select m.unit_id, m.period
    from {{ ref('mart_index_unit_period') }} as m
    where m.parent_unit_id is null
),

tops as (
    unpivot (
        select
            i.period,
            sum(i.denominator) filter (where i.indicator = 'ONLINE_DOSSIER_SHARE') as received,
            sum(i.denominator) filter (where i.indicator = 'ON_TIME_HANDLING') as handled_or_open,
            sum(i.denominator) filter (where i.indicator = 'ONLINE_PAYMENT_DOSSIER') as obligation,
            sum(i.numerator) filter (where i.indicator = 'ONLINE_PAYMENT_DOSSIER') as obligation_paid_online,
            sum(i.denominator) filter (where i.indicator = 'PETITION_PROCESSING_ON_TIME') as petitions
        from {{ ref('mart_index_indicator') }} as i
        semi join roots as r on r.unit_id = i.unit_id and r.period = i.period
        group by all
    )
    on received, handled_or_open, obligation, obligation_paid_online, petitions
    into name measure value top
)

select
    coalesce(f.period, t.period) as period,
    coalesce(f.measure, t.measure) as measure,
    coalesce(f.facts, 0) as facts,
    coalesce(t.top, 0) as top_of_the_tree
from facts as f
full join tops as t on t.period = f.period and t.measure = f.measure
where coalesce(f.facts, 0) <> coalesce(t.top, 0)

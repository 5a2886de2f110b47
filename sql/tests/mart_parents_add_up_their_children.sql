-- A parent's counts are its own plus its children's: for every unit and period of the marts,
-- the dossiers received (ONLINE_DOSSIER_SHARE's denominator) and received online (its
-- numerator), the dossiers received or handled (ON_TIME_HANDLING's denominator) and the
-- petitions (PETITION_PROCESSING_ON_TIME's denominator) equal those the unit carries itself
-- (its own records and those of the units it succeeded, counted here from the per-month models
-- and the petitions, not from the roll-up) plus the mart's figures of the units below it in the
-- tree valid at the period's end.
with

periods as (
    select * from {{ ref('int_period_judgement') }}
),

carried as (
    select period, unit_id, rollup_unit_id as carrier_id
    from {{ ref('int_units_rolled_up_by_period') }}
    where distance = 0
),

own_receipts as (
    select c.carrier_id as unit_id, pe.period, sum(r.received) as received, sum(r.online) as online
    from {{ ref('int_dossier_receipts_by_month') }} as r
    inner join periods as pe on r.month >= pe.starts_on and r.month < pe.ends_before
    inner join carried as c on c.period = pe.period and c.unit_id = r.unit_id
    group by all
),

own_handling as (
    select c.carrier_id as unit_id, pe.period, sum(h.dossiers) as handled_or_open
    from {{ ref('int_dossier_handling_by_month') }} as h
    inner join periods as pe
        on (h.received_month >= pe.starts_on and h.received_month < pe.ends_before)
        or (h.finished_month >= pe.starts_on and h.finished_month < pe.ends_before)
    inner join carried as c on c.period = pe.period and c.unit_id = h.unit_id
    group by all
),

own_petitions as (
    select c.carrier_id as unit_id, pe.period, count(*) as petitions
    from {{ ref('fct_petitions') }} as p
    inner join periods as pe on p.first_received_at >= pe.starts_at and p.first_received_at < pe.ends_at
    inner join carried as c on c.period = pe.period and c.unit_id = p.unit_id
    group by all
),

own as (
    unpivot (
        select
            m.unit_id,
            m.period,
            coalesce(r.received, 0) as received,
            coalesce(r.online, 0) as online,
            coalesce(h.handled_or_open, 0) as handled_or_open,
            coalesce(p.petitions, 0) as petitions
        from (select distinct unit_id, period from {{ ref('mart_index_unit_period') }}) as m
        left join own_receipts as r using (unit_id, period)
        left join own_handling as h using (unit_id, period)
        left join own_petitions as p using (unit_id, period)
    )
    on received, online, handled_or_open, petitions
    into name measure value own
),

figures as (
    unpivot (
        select
            unit_id,
            period,
            max(denominator) filter (where indicator = 'ONLINE_DOSSIER_SHARE') as received,
            max(numerator) filter (where indicator = 'ONLINE_DOSSIER_SHARE') as online,
            max(denominator) filter (where indicator = 'ON_TIME_HANDLING') as handled_or_open,
            max(denominator) filter (where indicator = 'PETITION_PROCESSING_ON_TIME') as petitions
        from {{ ref('mart_index_indicator') }}
        group by all
    )
    on received, online, handled_or_open, petitions
    into name measure value figure
),

children as (
    select u.parent_unit_id as unit_id, f.period, f.measure, sum(f.figure) as children
    from figures as f
    inner join {{ ref('mart_index_unit_period') }} as u using (unit_id, period)
    where u.parent_unit_id is not null
    group by all
)

select f.unit_id, f.period, f.measure, f.figure, o.own, coalesce(c.children, 0) as children
from figures as f
left join own as o using (unit_id, period, measure)
left join children as c using (unit_id, period, measure)
where f.figure <> coalesce(o.own, 0) + coalesce(c.children, 0)

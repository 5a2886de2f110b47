{{ config(severity='warn') }}
-- National report rows that look like a total of the units reported below them: in a month, a
-- unit's report exceeds the dossiers the portal has of the unit itself by at least what the
-- units below it (at the month's end, in the roll-up) reported. DOSSIER_SYNC's denominator
-- sums the report over a unit's own records and those below it, so a province reporting its
-- total beside its base units' counts would count those dossiers twice. (A unit that handles
-- dossiers itself, as a province does, reports about what the portal has of it: not listed.)
-- A warning: the report (or the job's reading of it) needs looking at; the rows are still
-- counted as they came.
with

national as (
    select unit_id, period, sum(received_count) as received_count
    from {{ ref('stg_national_report__received') }}
    group by all
),

portal as (
    select unit_id, strftime(month, '%Y-%m') as period, sum(received) as received
    from {{ ref('int_dossier_receipts_by_month') }}
    group by all
),

below as (
    select ru.period, ru.rollup_unit_id as unit_id, ru.unit_id as below_unit_id
    from {{ ref('int_units_rolled_up_by_period') }} as ru
    where ru.distance > 0
)

select
    n.unit_id,
    n.period,
    n.received_count,
    coalesce(p.received, 0) as portal_received,
    sum(m.received_count) as reported_below,
    list(m.unit_id order by m.unit_id) as reported_units_below
from national as n
inner join below as b on b.unit_id = n.unit_id and b.period = n.period
inner join national as m on m.unit_id = b.below_unit_id and m.period = n.period
left join portal as p on p.unit_id = n.unit_id and p.period = n.period
group by n.unit_id, n.period, n.received_count, p.received
having n.received_count - coalesce(p.received, 0) >= sum(m.received_count)

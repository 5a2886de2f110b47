{{ config(severity='warn') }}
-- Records with no unambiguous owner in a scored period they count in (docs/methodology.md,
-- "Which unit a record counts for"), each listed with the period and why:
--   * 'a split on its line': its unit, or a unit its line of successors reaches, was split
--     (several successors) before the day the period is judged with; no successor owns the
--     record unambiguously, so it counts one level up, for the split unit's parent
--     (int_units_rolled_up_by_period, route with 'split'), shown as `carrier_id`;
--   * 'unit not yet in the registry': its unit's first version begins after that day (a dossier
--     stamped with a unit before the registry has it), so the period's tree has no place for
--     it and it counts in no unit that period (it does in later periods it counts in).
-- An office can reassign such a record at the source (the portal's DonViXuLy, the reporting
-- system's MaDonVi) if it knows better. A warning: every other record is counted once at every
-- level, and these as described.
with

periods as (
    select * from {{ ref('int_period_judgement') }}
    where is_scored
),

carriers as (
    select period, unit_id, rollup_unit_id as carrier_id, route
    from {{ ref('int_units_rolled_up_by_period') }}
    where distance = 0
),

split_units as (
    select distinct unit_id from carriers where list_contains(string_split(route, ' > '), 'split')
),

first_versions as (
    select unit_id, min(valid_from) as first_valid_from
    from {{ ref('dim_units') }}
    group by all
),

-- Only records that can be such: of a unit whose line meets a split, or received before their
-- unit's first version; each with the periods it counts in (those holding its receipt or its
-- end), found by key, not by a range join.
suspects as (
    select 'dossier' as record, d.dossier_id as record_id, d.unit_id, [d.received_at, d.finished_at] as times
    from {{ ref('fct_dossiers') }} as d
    inner join first_versions as f on f.unit_id = d.unit_id
    where d.received_at is not null
      and (d.unit_id in (select unit_id from split_units) or d.received_at < f.first_valid_from)
    union all
    select 'petition', p.petition_id, p.unit_id, [p.first_received_at]
    from {{ ref('fct_petitions') }} as p
    inner join first_versions as f on f.unit_id = p.unit_id
    where p.unit_id in (select unit_id from split_units) or p.first_received_at < f.first_valid_from
),

records as (
    select distinct * from (
        select record, record_id, unit_id, unnest(list_distinct(flatten(list_transform(
            list_filter(times, lambda t: t is not null),
            lambda t: [
                strftime(t, '%Y-%m'),
                strftime(t, '%Y') || '-Q' || cast(quarter(t) as varchar),
                strftime(t, '%Y')
            ]
        )))) as period
        from suspects
    )
)

select r.record, r.record_id, r.unit_id, r.period,
    case when c.route is not null then 'a split on its line' else 'unit not yet in the registry' end as reason,
    c.carrier_id, c.route
from records as r
inner join periods as pe on pe.period = r.period
inner join first_versions as f on f.unit_id = r.unit_id
left join carriers as c on c.period = r.period and c.unit_id = r.unit_id
where (c.route is not null and list_contains(string_split(c.route, ' > '), 'split'))
   or f.first_valid_from > pe.judged_on

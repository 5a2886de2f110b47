{{ config(materialized='table', tags=['index']) }}
-- One row per period (period): the moment its rules judge it at, and whether it is final.
--
-- The data watermark is the newest moment the dossier data reached: the latest portal receive
-- time (ThoiDiemDongBo) among the current dossier versions, bounded by when the data actually
-- landed: a version whose receive time is later than its own landing (_ingested_at) is stamped
-- in the future and does not count (the warning test dossier_versions_synced_after_landing
-- lists it), so that one wrong clock cannot make periods final. It is read from the lake, not
-- the wall clock, so that a number can be reproduced from the lake.
--
-- A period that has ended by the watermark is judged at its end; one that has not (the live
-- month, quarter and year) as of the watermark: every rule that judges something "at the end
-- of the period" (open dossiers and petitions, supplements, answers not yet published) judges
-- it at `judged_as_of`. A period is final once every feed the index reads (int_feed_watermarks:
-- dossiers, their steps, petitions, ratings, payments, the national report) has data from its
-- end plus the grace for late syncs on (var grace_days in dbt_project.yml, 10 days; the publish
-- guard reads it from here); provisional before, and `feeds_waiting` names the feeds it waits
-- for. Without any dossier data there is no watermark: every period is judged at its end and
-- provisional, and none is reported.

with

periods as (
    select * from {{ ref('dim_periods') }}
),

-- the periods a methodology version is in force for (the first version's effective month on)
scored as (
    select period from {{ ref('int_methodology_by_period') }}
),

watermark as (
    select
        max(synced_at) filter (where synced_at <= version_loaded_at) as data_watermark,
        min(received_at) as first_received_at
    from {{ ref('stg_portal__dossiers') }}
),

feeds as (
    select * from {{ ref('int_feed_watermarks') }}
),

-- per period: the feeds whose data has not reached its end plus the grace
waiting as (
    select
        pe.period,
        list(f.feed order by f.feed) filter (
            where f.data_through is null
               or f.data_through < pe.ends_at
                   + case when f.waits_for_grace then interval ({{ var('grace_days') }}) day else interval 0 day end
        ) as feeds_waiting
    from periods as pe
    cross join feeds as f
    -- var feeds_not_waited_for: feeds a deployment does not wait for (comma-separated)
    where not list_contains(
        list_transform(string_split('{{ var('feeds_not_waited_for') }}', ','), lambda x: trim(x)),
        f.feed
    )
    group by pe.period
)

select
    pe.period,
    pe.period_type,
    pe.starts_on,
    pe.ends_before,
    pe.starts_at,
    pe.ends_at,
    w.data_watermark,
    coalesce(w.data_watermark < pe.ends_at, false) as is_live,
    least(pe.ends_at, w.data_watermark) as judged_as_of,
    -- the day whose state (catalogue version, tree) the period is judged with: its last day, or
    -- the watermark's day while it runs
    case when w.data_watermark < pe.ends_at then cast(w.data_watermark as date) else cast(pe.ends_before - 1 as date) end as judged_on,
    -- the first day of the watermark's month: a live period judges the dossiers late since an
    -- earlier month as late, a later month as on time, and that month's by their exact time
    cast(date_trunc('month', w.data_watermark) as date) as watermark_month,
    {{ var('grace_days') }} as grace_days,
    pe.ends_at + interval ({{ var('grace_days') }}) day as final_from,
    case when len(coalesce(wt.feeds_waiting, [])) = 0 then 'final' else 'provisional' end as status,
    coalesce(wt.feeds_waiting, []) as feeds_waiting,
    -- scored: a methodology version is in force for the period (none before the first
    -- version's effective month: such a period has no index; the warning test
    -- records_in_periods_without_a_methodology lists its records)
    s.period is not null as is_scored,
    -- reported: a scored period from the first month with a dossier to the period the watermark
    -- is in; every unit valid at the end of a reported period gets a row, records or not
    coalesce(pe.ends_at > w.first_received_at and pe.starts_at <= w.data_watermark, false)
        and s.period is not null as is_reported,
    pe.previous_period
from periods as pe
cross join watermark as w
left join scored as s on s.period = pe.period
left join waiting as wt on wt.period = pe.period

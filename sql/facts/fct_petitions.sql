{{ config(materialized='table', tags=['facts']) }}
-- One row per petition (petition_id): its milestones from the status history, the deadlines in
-- working days (refuse 2, request information 5, resolve 15 from first receipt; publish the
-- answer 2 after resolving) and whether it was handled on time.

with

petitions as (
    select * from {{ ref('stg_reporting__petitions') }}
),

calendar as (
    select * from {{ ref('dim_calendar') }}
),

working_days as (
    select * from {{ ref('dim_working_days') }}
),

history as (
    select
        petition_id,
        unnest(
            from_json(status_history_json, '[{"TrangThai":"VARCHAR","ThoiDiem":"VARCHAR"}]'),
            recursive := true
        )
    from petitions
),

-- A time that does not read as yyyymmddHHMMSS counts for nothing (the build does not stop on
-- it; the data test petitions_with_unreadable_history_times lists them).
milestones as (
    select
        petition_id,
        min(case when TrangThai = 'TU_CHOI' then try_strptime(ThoiDiem, '%Y%m%d%H%M%S') end) as refused_at,
        min(case when TrangThai = 'YEU_CAU_BO_SUNG' then try_strptime(ThoiDiem, '%Y%m%d%H%M%S') end) as info_requested_at,
        min(case when TrangThai = 'DA_GIAI_QUYET' then try_strptime(ThoiDiem, '%Y%m%d%H%M%S') end) as resolved_at,
        min(case when TrangThai = 'DA_CONG_KHAI' then try_strptime(ThoiDiem, '%Y%m%d%H%M%S') end) as published_at
    from history
    group by petition_id
),

-- n working days after a time, same time of day (dim_working_days says how).
deadlines as (
    select
        p.petition_id,
        d2.calendar_date + (p.first_received_at - date_trunc('day', p.first_received_at)) as refuse_due_at,
        d5.calendar_date + (p.first_received_at - date_trunc('day', p.first_received_at)) as info_due_at,
        d15.calendar_date + (p.first_received_at - date_trunc('day', p.first_received_at)) as resolve_due_at
    from petitions as p
    inner join calendar as r on r.calendar_date = cast(p.first_received_at as date)
    inner join working_days as d2 on d2.working_day_number = r.working_day_number + 2
    inner join working_days as d5 on d5.working_day_number = r.working_day_number + 5
    inner join working_days as d15 on d15.working_day_number = r.working_day_number + 15
),

publish_deadline as (
    select
        m.petition_id,
        d.calendar_date + (m.resolved_at - date_trunc('day', m.resolved_at)) as publish_due_at
    from milestones as m
    inner join calendar as r on r.calendar_date = cast(m.resolved_at as date)
    inner join working_days as d on d.working_day_number = r.working_day_number + 2
),

joined as (
    select
        p.petition_id,
        p.unit_id,
        p.category,
        p.first_received_at,
        m.refused_at,
        m.info_requested_at,
        m.resolved_at,
        m.published_at,
        dl.refuse_due_at,
        dl.info_due_at,
        dl.resolve_due_at,
        pd.publish_due_at,
        p.likes,
        p.dislikes,
        p.is_re_raised
    from petitions as p
    left join milestones as m using (petition_id)
    left join deadlines as dl using (petition_id)
    left join publish_deadline as pd using (petition_id)
),

-- Whether it was handled on time is a moment, `late_since`: the petition counts as not on time
-- at a judging moment T (a period's end, or the data watermark while the period runs) when
-- late_since < T. Open, it is judged by the resolve deadline; refused after its 2-day deadline,
-- it is late from the refusal (or the resolve deadline, if that came first); resolved, it is
-- late from the resolve deadline if resolved after it, from the resolution if information was
-- requested after its 5-day deadline, and from the publish deadline if the answer was published
-- after it or never: an answer never published makes it late once that deadline passes.
judged as (
    select
        *,
        refused_at is not null or resolved_at is not null as is_handled,
        coalesce(refused_at, resolved_at) as handled_at,
        case
            when refused_at is not null then
                case when refused_at > refuse_due_at then least(refused_at, resolve_due_at) end
            when resolved_at is not null then least(
                case when resolved_at > resolve_due_at then resolve_due_at end,
                case when info_requested_at > info_due_at then resolved_at end,
                case when published_at is null or published_at > publish_due_at then publish_due_at end
            )
            else resolve_due_at
        end as late_since
    from joined
)

select
    *,
    -- absent likes or dislikes (optional in jobs/petitions.toml) count as none: a petition is
    -- disliked only when the dislikes the system reports outnumber the likes
    coalesce(dislikes, 0) > coalesce(likes, 0) as is_disliked
from judged

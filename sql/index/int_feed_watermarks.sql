{{ config(materialized='table', tags=['index']) }}
-- One row per feed the index reads (feed): how far its data reached, and how many records it
-- holds. A period is final only once every feed here has reached the period's end plus the grace
-- (var grace_days; int_period_judgement), and `chiso publish`'s guard names the feeds that have
-- not.
--
-- A feed's watermark is the latest time its own records carry (the field a new version is told
-- apart by, SPEC §3), bounded by when they landed: a record stamped later than its own landing
-- has a wrong clock and does not count (for dossiers the warning test
-- dossier_versions_synced_after_landing lists it). Dossier steps carry the step's time. The
-- national report covers whole months and is published after each ends: its watermark is the end
-- of the latest month it reported that had ended when the report landed (one national snapshot
-- reports every unit at once), and a period waits for the report of its last month, not for a
-- grace after it (`waits_for_grace` false).
-- A feed holding no record has no watermark and holds every period back: an empty feed is a feed
-- not pulled yet, not one with nothing to say. A feed is judged by the times its records carry,
-- so a quiet one (no petition updated since the period's end plus the grace, no dossier synced on
-- a weekend) holds a period back until its next record; a deployment where a feed is not
-- connected lists it in var feeds_not_waited_for. The calendar, the catalogue and the registry
-- are reference data read as they stand, not feeds with a time.

select 'portal.dossiers' as feed, 'ThoiDiemDongBo' as time_field,
    true as waits_for_grace,
    max(synced_at) filter (where synced_at <= version_loaded_at) as data_through,
    count(*) as records
from {{ ref('stg_portal__dossiers') }}

union all

select 'portal.dossier_steps', 'ThoiDiemXuLy', true,
    max(stepped_at) filter (where stepped_at <= loaded_at),
    count(*)
from {{ ref('stg_portal__dossier_step_records') }}

union all

select 'reporting.petitions', 'NgayCapNhat', true,
    max(updated_at) filter (where updated_at <= loaded_at),
    count(*)
from {{ ref('stg_reporting__petitions') }}

union all

select 'reporting.ratings', 'ThoiGianDanhGia', true,
    max(rated_at) filter (where rated_at <= loaded_at),
    count(*)
from {{ ref('stg_reporting__ratings') }}

union all

select 'payments.payments', 'ThoiGianCapNhat', true,
    max(updated_at) filter (where updated_at <= loaded_at),
    count(*)
from {{ ref('stg_payments__payments') }}

union all

select 'national_report.received', 'KyBaoCao', false,
    -- a month that had not ended when its report landed (a mistyped or future month) says nothing
    max(cast(period || '-01' as timestamp) + interval 1 month)
        filter (where cast(period || '-01' as timestamp) + interval 1 month <= loaded_at),
    count(*)
from {{ ref('stg_national_report__received') }}

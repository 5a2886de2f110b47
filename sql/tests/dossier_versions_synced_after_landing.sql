{{ config(severity='warn') }}
-- Current dossier versions whose portal receive time (ThoiDiemDongBo) is later than the moment
-- chiso landed them: stamped in the future (a wrong clock at the source). Such a time cannot be
-- when the data reached the portal, so it does not move the data watermark
-- (int_period_judgement: each version's time is bounded by its landing), which would otherwise
-- make periods final before their time. A warning: the source's record needs correcting.
select dossier_id, unit_id, synced_at, version_loaded_at, lake_file, lake_row
from {{ ref('stg_portal__dossiers') }}
where synced_at > version_loaded_at

{{ config(severity='warn') }}
-- Petitions whose status history (LichSuXuLy) carries a time that does not read as
-- yyyymmddHHMMSS. Such a step counts for nothing (a refusal, resolution or publication at that
-- time is missed), so the petition may be judged wrongly: the reporting system's record needs
-- correcting. A warning: the rest of the warehouse is right and is published.
select petition_id, unit_id
from {{ ref('stg_reporting__petitions') }}
where coalesce(list_bool_or(list_transform(
    from_json(status_history_json, '[{"TrangThai":"VARCHAR","ThoiDiem":"VARCHAR"}]'),
    lambda h: nullif(h.ThoiDiem, '') is not null and try_strptime(h.ThoiDiem, '%Y%m%d%H%M%S') is null
)), false)

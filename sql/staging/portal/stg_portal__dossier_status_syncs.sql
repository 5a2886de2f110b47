{{ config(materialized='incremental', unique_key=['dossier_id', 'status_code'], tags=['staging'],
    pre_hook="{% if is_incremental() %}SET VARIABLE stg_portal__dossier_status_syncs_since = (SELECT max(loaded_at) FROM {{ this }}){% endif %}") }}
-- One row per dossier and status it ever carried (dossier_id, status_code): when the portal
-- first received a version with that status. DOSSIER_SYNC compares it with the time of the
-- processing step that made the change. Incremental: the versions landed since the last build
-- add the (dossier, status) pairs not kept yet and replace those whose first receive time
-- they move earlier.

with

source as not materialized (
    select MaHoSo, TrangThaiHoSo, ThoiDiemDongBo, _ingested_at
    from {{ source('portal', 'dossiers') }}
    {% if is_incremental() %}
    where _ingested_at >= getvariable('stg_portal__dossier_status_syncs_since')
    {% endif %}
),

firsts as (
    select
        MaHoSo as dossier_id,
        TrangThaiHoSo as status_code,
        min(ThoiDiemDongBo) as first_synced_at,
        max(_ingested_at) as loaded_at
    from source
    group by MaHoSo, TrangThaiHoSo
)

{% if is_incremental() %}
select f.*
from firsts as f
left join {{ this }} as t
    on t.dossier_id = f.dossier_id and t.status_code is not distinct from f.status_code
where t.dossier_id is null or f.first_synced_at < t.first_synced_at
{% else %}
select * from firsts
{% endif %}

{{ config(materialized='incremental', unique_key='dossier_id', tags=['staging'],
    pre_hook="{% if is_incremental() %}SET VARIABLE stg_portal__dossier_status_syncs_since = (SELECT max(loaded_at) FROM {{ this }}){% endif %}") }}
-- One row per dossier and status it ever carried (dossier_id, status_code): when the portal
-- first received a version with that status. DOSSIER_SYNC compares it with the time of the
-- processing step that made the change. Incremental: the dossiers with versions landed since
-- the last build are recomputed from the new versions and the kept rows (a minimum merges).

with

source as not materialized (
    select MaHoSo, TrangThaiHoSo, ThoiDiemDongBo, _ingested_at
    from {{ source('portal', 'dossiers') }}
    {% if is_incremental() %}
    where _ingested_at >= getvariable('stg_portal__dossier_status_syncs_since')
    {% endif %}
),

versions as (
    select
        MaHoSo as dossier_id,
        TrangThaiHoSo as status_code,
        ThoiDiemDongBo as synced_at,
        _ingested_at as loaded_at
    from source
    {% if is_incremental() %}
    union all by name
    select dossier_id, status_code, first_synced_at as synced_at, loaded_at
    from {{ this }}
    where dossier_id in (select MaHoSo from source)
    {% endif %}
)

select
    dossier_id,
    status_code,
    min(synced_at) as first_synced_at,
    max(loaded_at) as loaded_at
from versions
group by dossier_id, status_code

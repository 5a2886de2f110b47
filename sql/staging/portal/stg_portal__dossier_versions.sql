{{ config(materialized='view', tags=['staging']) }}
-- One row per dossier version (dossier_id, synced_at): the status each version carried and
-- when the portal received it, a resent version counted once. For drill-down (which versions
-- reached the portal, and when); the index reads stg_portal__dossier_status_syncs.

with

source as (
    select * from {{ source('portal', 'dossiers') }}
),

renamed as (
    select
        MaHoSo as dossier_id,
        DonViXuLy as unit_id,
        TrangThaiHoSo as status_code,
        NgayTiepNhan as received_at,
        ThoiDiemDongBo as synced_at,
        _ingested_at as loaded_at
    from source
),

deduplicated as (
    select * from renamed
    qualify row_number() over (partition by dossier_id, synced_at order by loaded_at) = 1
)

select * from deduplicated

{{ config(materialized='view', tags=['staging']) }}
-- One row per processing step (dossier_id, stepped_at, status_code). The feed is append-only;
-- a step pulled twice appears once (the first landed copy).
--
-- A view: the steps are read from the lake when asked for (drill-downs: who held a late
-- dossier). The index does not need them one by one: fct_dossiers summarises each dossier's
-- steps straight from the lake, where a repeated step changes nothing it computes.

with

source as (
    select * from {{ source('portal', 'dossier_steps') }}
),

renamed as (
    select
        MaHoSo as dossier_id,
        NguoiXuLy as officer_name,
        ChucDanh as officer_title,
        ThoiDiemXuLy as stepped_at,
        PhongBanXuLy as department,
        NoiDungXuLy as action,
        TrangThai as status_code,
        NgayBatDau as started_at,
        NgayKetThucTheoQuyDinh as due_at,
        _ingested_at as loaded_at
    from source
),

deduplicated as (
    select * from renamed
    qualify row_number() over (partition by dossier_id, stepped_at, status_code order by loaded_at) = 1
)

select * from deduplicated

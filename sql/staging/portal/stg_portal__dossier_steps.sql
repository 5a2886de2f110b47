{{ config(materialized='incremental', unique_key='dossier_id', tags=['staging'],
    pre_hook="{% if is_incremental() %}SET VARIABLE stg_portal__dossier_steps_since = (SELECT max(loaded_at) FROM {{ this }}){% endif %}") }}
-- One row per processing step (dossier_id, stepped_at, status_code). The feed is append-only;
-- a step pulled twice appears once (the first landed copy). Incremental: the steps of dossiers
-- with steps landed since the last build are rebuilt from the new records and the kept ones.

with

source as not materialized (
    select * from {{ source('portal', 'dossier_steps') }}
    {% if is_incremental() %}
    where _ingested_at >= getvariable('stg_portal__dossier_steps_since')
    {% endif %}
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
    {% if is_incremental() %}
    union all by name
    select * from {{ this }} where dossier_id in (select MaHoSo from source)
    {% endif %}
),

deduplicated as (
    select * from renamed
    qualify row_number() over (partition by dossier_id, stepped_at, status_code order by loaded_at) = 1
)

select * from deduplicated

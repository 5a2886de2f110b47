{{ config(materialized='incremental', unique_key='dossier_id', tags=['staging']) }}
-- One row per processing step (dossier_id, stepped_at, status_code). The feed is append-only;
-- a step pulled twice appears once (the first landed copy). Incremental: the steps of dossiers
-- with steps landed since the last build are rebuilt from the new records and the kept ones.

with

source as not materialized (
    select * from {{ source('portal', 'dossier_steps') }}
    {% if is_incremental() %}
    where _ingested_at >= (select max(loaded_at) from {{ this }})
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
    select
        dossier_id,
        stepped_at,
        status_code,
        arg_min(
            struct_pack(
                officer_name := officer_name,
                officer_title := officer_title,
                department := department,
                action := action,
                started_at := started_at,
                due_at := due_at
            ),
            loaded_at
        ) as s,
        min(loaded_at) as loaded_at
    from renamed
    group by dossier_id, stepped_at, status_code
)

select
    dossier_id,
    s.officer_name,
    s.officer_title,
    stepped_at,
    s.department,
    s.action,
    status_code,
    s.started_at,
    s.due_at,
    loaded_at
from deduplicated

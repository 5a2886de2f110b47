{{ config(materialized='incremental', incremental_strategy='append', tags=['staging'],
    pre_hook="{% if is_incremental() %}SET VARIABLE stg_portal__dossier_steps_since = (SELECT max(loaded_at) FROM {{ this }}){% endif %}") }}
-- One row per processing step (dossier_id, stepped_at, status_code). The feed is append-only;
-- a step pulled twice appears once (the first landed copy). Incremental (append): the steps
-- landed since the last build that are not kept yet are added.

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
),

deduplicated as (
    select * from renamed
    qualify row_number() over (partition by dossier_id, stepped_at, status_code order by loaded_at) = 1
)

select d.* from deduplicated as d
{% if is_incremental() %}
anti join {{ this }} as t
    on t.dossier_id = d.dossier_id
    and t.stepped_at is not distinct from d.stepped_at
    and t.status_code is not distinct from d.status_code
{% endif %}

{{ config(materialized='incremental', unique_key='petition_id', tags=['staging'],
    pre_hook="{% if is_incremental() %}SET VARIABLE stg_reporting__petitions_since = (SELECT coalesce(max(loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}") }}
-- One row per petition (petition_id): its latest version by NgayCapNhat. Each version carries
-- the whole status history so far, so the latest one is complete.
-- Incremental: records landed since the last build compete with the kept row of their key.

with

source as not materialized (
    select * from {{ source('reporting', 'petitions') }}
    {% if is_incremental() %}
    where _ingested_at > getvariable('stg_reporting__petitions_since')
    {% endif %}
),

renamed as (
    select
        MaPAKN as petition_id,
        MaDonVi as unit_id,
        case PhanLoai
            when '1' then 'rules_and_procedures'
            when '2' then 'staff_behaviour'
            else 'other'
        end as category,
        TieuDe as title,
        NguoiGui as sender_name,
        NgayTiepNhan as first_received_at,
        TrangThai as status_code,
        LichSuXuLy as status_history_json,
        SoLuotThich as likes,
        SoLuotKhongThich as dislikes,
        -- re-raised only when the reporting system says so: an absent flag (PhanAnhLai is
        -- optional in jobs/petitions.toml) means not re-raised, never a verdict against the unit
        coalesce(PhanAnhLai = 1, false) as is_re_raised,
        NgayCapNhat as updated_at,
        _ingested_at as loaded_at
    from source
    {% if is_incremental() %}
    union all by name
    select * from {{ this }} where petition_id in (select MaPAKN from source)
    {% endif %}
),

latest as (
    select * from renamed
    qualify row_number() over (partition by petition_id order by updated_at desc, loaded_at desc) = 1
)

select * from latest

{{ config(materialized='table', tags=['staging']) }}
-- One row per payment reference (payment_ref): its latest status by ThoiGianCapNhat.

with

source as (
    select * from {{ source('payments', 'payments') }}
),

renamed as (
    select
        MaThamChieu as payment_ref,
        MaHoSo as dossier_id,
        SoTien as amount_vnd,
        case TrangThaiThanhToan
            when '1' then 'pending'
            when '2' then 'paid'
            when '3' then 'refunded'
            when '4' then 'cancelled'
        end as payment_status,
        KenhThanhToan as payment_channel,
        ThoiGianCapNhat as updated_at,
        _ingested_at as loaded_at
    from source
),

latest as (
    select * from renamed
    qualify row_number() over (partition by payment_ref order by updated_at desc, loaded_at desc) = 1
)

select * from latest

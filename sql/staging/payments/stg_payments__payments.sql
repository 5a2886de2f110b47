{{ config(materialized='incremental', unique_key='payment_ref', tags=['staging'],
    pre_hook="{% if is_incremental() %}SET VARIABLE stg_payments__payments_since = (SELECT coalesce(max(loaded_at), TIMESTAMP '0001-01-01') FROM {{ this }}){% endif %}") }}
-- One row per payment reference (payment_ref): its latest status by ThoiGianCapNhat.
-- Incremental: records landed since the last build compete with the kept row of their key.

with

source as not materialized (
    select * from {{ source('payments', 'payments') }}
    {% if is_incremental() %}
    where _ingested_at > getvariable('stg_payments__payments_since')
    {% endif %}
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
    {% if is_incremental() %}
    union all by name
    select * from {{ this }} where payment_ref in (select MaThamChieu from source)
    {% endif %}
),

latest as (
    select * from renamed
    qualify row_number() over (partition by payment_ref order by updated_at desc, loaded_at desc) = 1
)

select * from latest

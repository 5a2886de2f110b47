{{ config(materialized='table', tags=['staging']) }}
-- One row per procedure (procedure_code) from the latest catalogue snapshot.

with

source as (
    select * from {{ source('catalogue', 'procedures') }}
),

latest_snapshot as (
    select * from source
    where _run_id = (select max(_run_id) from source)
),

renamed as (
    select
        -- ids and names
        MaTTHC as procedure_code,
        TENTTHC as procedure_name,
        MaLinhVuc as field_code,
        LINHVUC as field_name,
        CAPTHUCHIEN as authority_level,

        -- online service
        case MucDoDVC
            when 'TOAN_TRINH' then 'full_online'
            when 'MOT_PHAN' then 'partly_online'
            when 'KHONG' then 'not_online'
        end as service_level,
        DuDieuKienToanTrinh = 1 as is_eligible_full_online,
        KetQuaLaGiay = 1 as is_result_paper,
        ThoiHanGiaiQuyet as statutory_working_days,

        -- fees and obligations
        CoNghiaVuTaiChinh = 1 as has_financial_obligation,
        PhiLePhi as fees_json,
        coalesce(json_array_length(PhiLePhi), 0) > 0 as is_fee_bearing,

        -- publication
        SoQuyetDinhCongBo as announcement_decision_no,
        NgayQuyetDinhCongBo as announced_on,
        NgayHieuLucCanCu as legal_basis_effective_on,
        NgayDangTaiCSDLQG as posted_on,
        SoThanhPhanBatBuocDayDu as mandatory_components_filled,
        SoThanhPhanBatBuocDayDu = 7 as has_all_mandatory_components,

        -- data connections
        KetNoiCSDLDanCu = 1 as is_population_data_connected,
        CoThanhPhanThayTheBangDuLieu = 1 as has_replaceable_components,

        _ingested_at as loaded_at
    from latest_snapshot
)

select * from renamed

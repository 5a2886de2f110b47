{{ config(materialized='table', tags=['staging']) }}
-- One row per dossier (dossier_id): its current version.
--
-- The portal re-sends a dossier on every change, late and out of order: a version synced late
-- can arrive (ThoiDiemDongBo) after a newer one, so arrival order alone would make statuses go
-- backwards. Versions are ordered by the state they describe: the latest of their own event
-- times (submitted, received, supplement asked and answered, processed, returned, refused),
-- then whether the online payment had been made, then the status's place in the workflow,
-- and only then by arrival.

with

source as (
    select * from {{ source('portal', 'dossiers') }}
),

renamed as (
    select
        -- ids
        MaHoSo as dossier_id,
        MaTTHC as procedure_code,
        TenTTHC as procedure_name,
        MaLinhVuc as field_code,
        DonViXuLy as unit_id,

        -- applicant (personal: never published)
        ChuHoSo as owner_name,
        SoGiayToChuHoSo as owner_id_number,
        case LoaiDoiTuong
            when '1' then 'citizen'
            when '2' then 'business'
            when '3' then 'state_agency'
            else 'other'
        end as applicant_type,

        -- channel and status
        case KenhThucHien
            when '1' then 'in_person'
            when '2' then 'online'
            when '3' then 'postal'
        end as channel,
        TrangThaiHoSo as status_code,
        case TrangThaiHoSo
            when '1' then 'registered'
            when '2' then 'received'
            when '3' then 'not_accepted'
            when '4' then 'processing'
            when '5' then 'supplement_requested'
            when '6' then 'financial_obligation_requested'
            when '7' then 'withdrawn'
            when '8' then 'processing_stopped'
            when '9' then 'processed'
            when '10' then 'result_returned'
        end as status,

        -- times (Vietnamese wall clock)
        NgayNopHoSo as submitted_at,
        NgayTiepNhan as received_at,
        NgayHenTra as due_at,
        NgayKetThucXuLy as processed_at,
        NgayTra as returned_at,
        NgayTuChoi as refused_at,
        ThoiDiemDongBo as synced_at,

        -- flags and lists (JSON text)
        HoSoCoThanhPhanSoHoa = 1 as is_digitised,
        DuocThanhToanTrucTuyen = 1 as is_paid_online,
        TaiLieuNop as components_json,
        DanhSachLePhi as fees_json,
        DanhSachHoSoBoSung as supplements_json,
        DanhSachGiayToKetQua as results_json,
        DSKetNoiCSDL as national_db_links_json,

        _ingested_at as loaded_at,

        -- ordering of versions
        greatest(
            NgayNopHoSo,
            NgayTiepNhan,
            NgayKetThucXuLy,
            NgayTra,
            NgayTuChoi,
            strptime(
                nullif(list_max(list_transform(
                    from_json(DanhSachHoSoBoSung, '[{"NgayBoSung":"VARCHAR","NgayTiepNhanBoSung":"VARCHAR"}]'),
                    lambda s: greatest(s.NgayBoSung, coalesce(s.NgayTiepNhanBoSung, s.NgayBoSung))
                )), ''),
                '%Y%m%d%H%M%S'
            )
        ) as state_at,
        case TrangThaiHoSo
            when '1' then 1
            when '2' then 2
            when '4' then 3
            when '5' then 4
            when '6' then 5
            when '10' then 7
            else 6
        end as workflow_rank
    from source
),

current_version as (
    select * from renamed
    qualify row_number() over (
        partition by dossier_id
        order by state_at desc, is_paid_online desc, workflow_rank desc, synced_at desc, loaded_at desc
    ) = 1
)

select * exclude (state_at, workflow_rank) from current_version

"""The memo of verified vote signatures (``committee.VerifiedVotes``): it saves repeated Ed25519
checks of a certificate seen again, and never lets a forged vote through on the strength of a
cached batch root."""

import dataclasses

import pytest

from p2pgrid.ledger import committee as committee_module
from p2pgrid.ledger.chain import LedgerState
from p2pgrid.ledger.committee import CertificateInvalid, VerifiedVotes, verify_certificate
from p2pgrid.ledger.messages import Mint
from p2pgrid.ledger.testing import LedgerFixture, seeded_key

FX = LedgerFixture()


def certified_mint(amount: int):
    """A certificate (quorum of votes) over a one-entry batch; ``amount`` makes each root distinct."""
    entry = FX.entry(FX.gateway, LedgerState().head(FX.gateway.public_key), "mint",
                     Mint(seeded_key("alice").public_key, amount))
    return FX.certify([entry]).certificate


def count_signature_checks(monkeypatch) -> list[int]:
    calls = [0]
    real = committee_module.verify_vote_signature

    def counting(vote, signature):
        calls[0] += 1
        return real(vote, signature)

    monkeypatch.setattr(committee_module, "verify_vote_signature", counting)
    return calls


def test_certificate_checked_again_costs_no_signature_checks(monkeypatch):
    memo = VerifiedVotes()
    cert = certified_mint(1)
    calls = count_signature_checks(monkeypatch)
    verify_certificate(FX.committee, cert, memo)
    assert calls[0] == FX.committee.quorum
    verify_certificate(FX.committee, cert, memo)
    assert calls[0] == FX.committee.quorum
    assert len(memo) == FX.committee.quorum


def test_forged_signature_over_a_cached_root_is_still_rejected():
    memo = VerifiedVotes()
    cert = certified_mint(2)
    verify_certificate(FX.committee, cert, memo)          # every (vote, signature) of the root cached
    forged = bytearray(cert.signatures[0])
    forged[0] ^= 0x01
    tampered = dataclasses.replace(cert, signatures=(bytes(forged),) + cert.signatures[1:])
    with pytest.raises(CertificateInvalid, match="bad vote signature"):
        verify_certificate(FX.committee, tampered, memo)


def test_signature_of_another_root_cannot_stand_in_for_a_cached_one():
    memo = VerifiedVotes()
    cert, other = certified_mint(3), certified_mint(4)
    verify_certificate(FX.committee, cert, memo)
    verify_certificate(FX.committee, other, memo)
    # The validator's genuine signature over ``other``'s root, presented for ``cert``'s root.
    swapped = dataclasses.replace(cert, signatures=(other.signatures[0],) + cert.signatures[1:])
    with pytest.raises(CertificateInvalid, match="bad vote signature"):
        verify_certificate(FX.committee, swapped, memo)


def test_memo_forgets_oldest_pairs_beyond_its_capacity(monkeypatch):
    memo = VerifiedVotes(capacity=FX.committee.quorum)
    first, second = certified_mint(5), certified_mint(6)
    verify_certificate(FX.committee, first, memo)
    verify_certificate(FX.committee, second, memo)
    assert len(memo) == FX.committee.quorum
    calls = count_signature_checks(monkeypatch)
    verify_certificate(FX.committee, first, memo)          # forgotten: checked again
    assert calls[0] == FX.committee.quorum


def test_failed_check_is_not_remembered(monkeypatch):
    memo = VerifiedVotes()
    cert = certified_mint(7)
    vote = cert.vote_for(cert.signers[0])
    assert not memo.check(vote, bytes(64))
    assert len(memo) == 0

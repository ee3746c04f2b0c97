"""The price book: per model (and optionally per model profile), per token, in wei (pure)."""

from domain.billing.money import Price
from domain.events import Event, ModelPriceSet, PriceEntry


def book_of(event: Event | None) -> tuple[PriceEntry, ...]:
    return event.prices if isinstance(event, ModelPriceSet) else ()


def decide_price(  # noqa: PLR0917
    book: tuple[PriceEntry, ...],
    model: str,
    profile_id: str | None,
    prompt_price_wei: int,
    completion_price_wei: int,
    by: str,
) -> list[Event]:
    entry = PriceEntry(
        model=model,
        profile_id=profile_id,
        prompt_price_wei=str(prompt_price_wei),
        completion_price_wei=str(completion_price_wei),
    )
    if entry in book:
        return []
    others = [p for p in book if (p.model, p.profile_id) != (model, profile_id)]
    prices = tuple(sorted([*others, entry], key=lambda p: (p.model, p.profile_id or "")))
    return [
        ModelPriceSet(
            model=model,
            profile_id=profile_id,
            prompt_price_wei=entry.prompt_price_wei,
            completion_price_wei=entry.completion_price_wei,
            set_by=by,
            prices=prices,
        )
    ]


def price_in(book: tuple[PriceEntry, ...], model: str, profile_id: str | None) -> Price | None:
    """The profile's own price if it has one, else the model's."""
    found = None
    for entry in book:
        if entry.model != model:
            continue
        if entry.profile_id == profile_id and profile_id is not None:
            found = entry
            break
        if entry.profile_id is None:
            found = entry
    if found is None:
        return None
    return Price(
        model=model,
        profile_id=found.profile_id,
        prompt_wei=int(found.prompt_price_wei),
        completion_wei=int(found.completion_price_wei),
    )

/** The ~200-byte event payload both benchmarks send, so they move the same events. */
export const PAYLOAD = {
  orderId: "ord-7f3a9c21",
  amount: 1249.5,
  currency: "EUR",
  items: [
    { sku: "sku-1042", qty: 2 },
    { sku: "sku-2210", qty: 1 },
  ],
  shipping: { country: "DE", method: "express" },
  note: "gift wrap, leave at door",
};

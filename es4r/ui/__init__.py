"""The app's presentation layer: figures, the conversation export and text formatting.
No model code: everything here reads TurnResult / Conversation objects."""

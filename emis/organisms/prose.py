"""Seeded generator of a broad synthetic chat corpus: everyday questions answered in plain English prose."""

from __future__ import annotations

import functools
import itertools
import random
import re
import string
from dataclasses import dataclass


@dataclass(frozen=True)
class ProseItem:
    """One everyday question with a short prose answer."""

    question: str  # the user's message
    answer: str  # 1-3 sentences of plain prose, never code
    topic: str  # topic family name, e.g. "cooking"
    template_family: str  # question-template family id, e.g. "cooking/how_to"


@dataclass(frozen=True)
class _Topic:
    """A topic: question-template families keyed by phrasing pattern, plus answer material."""

    families: dict[str, tuple[str, ...]]  # pattern -> question templates with `{slot}` fields
    ideas: tuple[str, ...]  # base-form verb phrases for advice, e.g. "cook {dish} slowly"
    views: tuple[str, ...]  # lower-case clauses stating an opinion or explanation
    supports: tuple[str, ...]  # full supporting sentences
    dreams: tuple[str, ...] = ()  # base-form verb phrases for hypotheticals; falls back to ideas
    list_slot: str | None = None  # slot whose values a "list" answer names; None lists ideas


_SLOTS: dict[str, tuple[str, ...]] = {
    "dish": ("lentil soup", "vegetable curry", "fried rice", "banana bread", "a simple omelette", "roast chicken",
             "mushroom risotto", "bean chili", "tomato pasta", "pancakes", "stir-fried noodles", "a Greek salad",
             "potato soup", "fish tacos", "shakshuka", "dumplings", "flatbread", "apple crumble", "chickpea stew",
             "baked salmon"),
    "ingredient": ("garlic", "lemon", "fresh herbs", "chili flakes", "ginger", "butter", "spinach", "onions",
                   "cheese", "tomatoes", "mushrooms", "rice", "eggs", "beans", "yogurt"),
    "meal": ("breakfast", "lunch", "a weeknight supper", "a picnic", "a packed lunch", "a late snack",
             "a weekend brunch", "a family meal"),
    "place": ("Lisbon", "Japan", "Iceland", "Mexico City", "the Scottish Highlands", "Morocco", "New Zealand",
              "Vienna", "Peru", "Vietnam", "Norway", "Istanbul", "Kenya", "the Alps", "Montreal", "Buenos Aires",
              "Greece", "Seoul"),
    "landscape": ("the mountains", "the seaside", "a quiet forest", "the desert", "a big lake", "a river valley",
                  "open meadows", "a rocky coast", "a rainforest", "the countryside"),
    "activity": ("hiking", "baking", "painting", "chess", "knitting", "cycling", "writing short stories",
                 "birdwatching", "gardening", "playing the guitar", "doing puzzles", "photography", "swimming",
                 "journaling", "pottery", "yoga", "running", "dancing", "board games", "volunteering"),
    "emotion": ("anxious", "lonely", "overwhelmed", "restless", "stuck", "sad", "nervous", "frustrated",
                "unmotivated", "stressed", "discouraged", "jealous", "homesick", "uncertain"),
    "relative": ("mum", "dad", "sister", "brother", "grandmother", "grandfather", "cousin", "aunt", "uncle",
                 "stepfather", "mother-in-law", "older brother"),
    "child": ("toddler", "six-year-old", "teenage daughter", "teenage son", "young son", "little girl",
              "eight-year-old", "ten-year-old"),
    "friend": ("best friend", "roommate", "coworker", "neighbour", "old school friend", "classmate", "teammate",
               "flatmate", "closest friend"),
    "trait": ("shy", "stubborn", "forgetful", "impatient", "chatty", "quiet", "competitive", "messy",
              "critical", "secretive", "bossy"),
    "animal": ("dog", "cat", "rabbit", "parrot", "hamster", "goldfish", "tortoise", "guinea pig", "ferret",
               "budgie", "puppy", "kitten", "lizard"),
    "wild_animal": ("owl", "fox", "octopus", "elephant", "dolphin", "hedgehog", "whale", "crow", "bee", "wolf",
                    "otter", "penguin", "tiger", "ant"),
    "figure": ("Leonardo da Vinci", "Marie Curie", "Cleopatra", "Abraham Lincoln", "Ada Lovelace", "Confucius",
               "Nelson Mandela", "Galileo", "Frida Kahlo", "Isaac Newton", "Harriet Tubman", "Mozart",
               "Jane Austen", "Charles Darwin", "Socrates", "Mahatma Gandhi", "Joan of Arc", "Nikola Tesla"),
    "era": ("ancient Rome", "ancient Egypt", "the Renaissance", "the Middle Ages", "the Industrial Revolution",
            "the Bronze Age", "the Viking age", "the Roaring Twenties", "the Enlightenment", "the Tang dynasty",
            "the age of exploration"),
    "profession": ("teacher", "nurse", "carpenter", "software engineer", "chef", "farmer", "librarian", "pilot",
                   "electrician", "journalist", "architect", "lawyer", "firefighter", "gardener", "accountant",
                   "scientist", "musician", "plumber"),
    "skill": ("public speaking", "cooking", "drawing", "writing", "negotiating", "listening", "time management",
              "mental arithmetic", "singing", "making conversation", "saving money", "staying focused",
              "remembering names"),
    "sport": ("football", "tennis", "basketball", "swimming", "cricket", "rugby", "cycling", "climbing",
              "volleyball", "table tennis", "badminton", "rowing", "skiing", "athletics", "golf", "baseball"),
    "instrument": ("piano", "guitar", "violin", "drums", "flute", "ukulele", "cello", "saxophone", "trumpet",
                   "harmonica"),
    "genre": ("jazz", "classical music", "folk", "hip hop", "rock", "blues", "reggae", "country music",
              "electronic music", "opera", "soul", "punk"),
    "art": ("watercolour painting", "sculpture", "portrait drawing", "street art", "photography", "calligraphy",
            "pottery", "printmaking", "collage", "embroidery"),
    "book_genre": ("mystery novels", "science fiction", "poetry", "biographies", "historical fiction", "fantasy",
                   "travel writing", "short stories", "classic novels", "graphic novels", "popular science books",
                   "essays"),
    "film_genre": ("comedies", "documentaries", "westerns", "animated films", "thrillers", "romantic comedies",
                   "war films", "silent films", "musicals", "nature documentaries", "detective shows"),
    "subject": ("history", "maths", "chemistry", "biology", "geography", "philosophy", "economics", "art history",
                "physics", "statistics", "music theory", "astronomy", "psychology", "literature"),
    "science": ("black holes", "photosynthesis", "the immune system", "plate tectonics", "evolution", "gravity",
                "the water cycle", "electricity", "vaccines", "DNA", "rainbows", "ocean tides", "earthquakes",
                "the human brain", "magnets", "volcanoes"),
    "space": ("the Moon", "Mars", "Jupiter", "the rings of Saturn", "the Milky Way", "a comet", "the Sun",
              "a distant galaxy", "the International Space Station", "Venus", "a nebula"),
    "plant": ("tomatoes", "basil", "roses", "sunflowers", "lavender", "strawberries", "succulents", "ferns",
              "tulips", "mint", "potatoes", "chillies", "sweet peas"),
    "season": ("spring", "summer", "autumn", "winter", "late summer", "early spring", "midwinter"),
    "weather": ("rainy days", "heat waves", "snow", "thunderstorms", "fog", "windy weather", "frosty mornings",
                "long grey days"),
    "time": ("Saturday", "Sunday", "rainy afternoon", "quiet evening", "long weekend", "summer evening",
             "winter night", "lazy morning"),
    "chore": ("doing the dishes", "folding laundry", "vacuuming", "cleaning the bathroom", "tidying the garage",
              "ironing", "sorting paperwork", "cleaning out the fridge", "washing windows", "taking out the bins"),
    "room": ("kitchen", "bedroom", "living room", "hallway", "bathroom", "home office", "balcony", "spare room",
             "tiny flat"),
    "issue": ("public transport", "housing costs", "education", "healthcare", "voting rules", "free speech",
              "taxes", "climate policy", "local libraries", "unemployment", "city planning", "the minimum wage",
              "online privacy", "recycling", "tourism"),
    "value": ("honesty", "kindness", "patience", "courage", "curiosity", "fairness", "humility", "loyalty",
              "generosity", "discipline", "gratitude", "forgiveness", "ambition", "humour"),
    "tech": ("smartphones", "social media", "self-driving cars", "video calls", "robots", "artificial intelligence",
             "e-readers", "smart watches", "electric cars", "online shopping", "virtual reality", "chatbots",
             "drones"),
    "game": ("chess", "Scrabble", "sudoku", "crosswords", "poker", "Monopoly", "card games", "jigsaw puzzles",
             "video games", "charades", "Go", "trivia quizzes", "backgammon", "dominoes"),
    "holiday": ("birthday", "New Year's Eve", "wedding anniversary", "graduation", "family reunion",
                "summer festival", "retirement party", "housewarming", "winter holiday"),
    "clothing": ("a winter coat", "running shoes", "a good pair of jeans", "a suit", "a rain jacket",
                 "a wool jumper", "a summer dress", "walking boots", "a warm scarf", "a leather bag"),
    "language": ("Spanish", "French", "Japanese", "German", "Mandarin", "Italian", "Portuguese", "Arabic", "Korean",
                 "Russian", "Dutch", "Swahili", "Hindi", "Greek"),
    "habit": ("waking up early", "drinking more water", "going for a walk every day", "reading before bed",
              "keeping a journal", "meditating", "eating more vegetables", "stretching in the morning",
              "putting the phone away at night", "tidying for ten minutes a day", "cooking at home",
              "saving a little every week"),
    "goal": ("buying a house", "paying off a loan", "an emergency fund", "a holiday", "starting a small business",
             "retiring early", "university fees", "a car", "a wedding"),
    "env": ("plastic waste", "air pollution", "deforestation", "rising sea levels", "water shortages",
            "food waste", "noise pollution", "overfishing", "light pollution", "species extinction"),
    "superpower": ("the power to fly", "invisibility", "the ability to read minds", "the ability to talk to animals",
                   "time travel", "the power to teleport", "the ability to breathe underwater", "perfect memory",
                   "the power to stop time", "the power to heal others"),
    "number": ("three", "a few", "some"),
}

_T = _Topic

_TOPIC_DATA: dict[str, _Topic] = {
    "cooking": _T(
        families={
            "how_to": ("How do I make {dish} at home?", "What's the easiest way to cook {dish} for a beginner?",
                       "how can i get better at cooking with {ingredient}?",
                       "Could you explain how to prepare {dish} properly?"),
            "recommend": ("Can you suggest something tasty for {meal} using {ingredient}?",
                          "I have {ingredient} and not much else. What could I make?",
                          "Any ideas for {meal} that won't take long?"),
            "opinion": ("What do you think of {dish}?", "Is {dish} overrated or actually good?",
                        "Be honest, is cooking with {ingredient} a good idea?"),
            "list": ("Name {number} dishes a beginner should learn.",
                     "Give me {number} recipes that use {ingredient}."),
            "choice": ("Should I make {dish} or {dish2} for my guests?",
                       "For {meal}, would you go with {dish} or {dish2}?"),
            "hypothetical": ("If you could only eat one dish for the rest of your life, what would it be?",
                             "If you opened a small restaurant, what would be on the menu?",
                             "Imagine you could cook with any famous chef for a day. What would you make?"),
        },
        ideas=("cook {dish} with a little {ingredient}",
               "master one simple recipe like {dish} before trying harder ones",
               "prepare all your ingredients before you turn on the stove",
               "taste as you go and adjust the salt slowly",
               "keep {ingredient}, onions and a few spices in the cupboard"),
        views=("{dish} is a great choice because it is simple, filling and forgiving",
               "home cooking is less about fancy recipes and more about practice",
               "adding {ingredient} can make a plain dish taste much brighter",
               "the best meals are usually the ones shared with people you like"),
        supports=("It is quick, cheap and hard to get wrong.",
                  "Good ingredients and a little patience matter more than expensive equipment.",
                  "Once you know a few basics, you can improvise with whatever is in the fridge.",
                  "Cooking the same dish a few times is the fastest way to improve.",
                  "Leftovers of {dish} often taste even better the next day."),
        dreams=("cook {dish} every Sunday for friends", "run a tiny cafe that serves {dish} and fresh bread",
                "eat {dish} made with {ingredient}, because it never gets old"),
        list_slot="dish",
    ),
    "health": _T(
        families={
            "how_to": ("How do I build a habit of {habit}?",
                       "What's a realistic way to get fitter if I hate the gym?",
                       "How can I have more energy in the afternoon?"),
            "recommend": ("What's a healthy snack you'd recommend?",
                          "Can you recommend an easy exercise routine for a busy person?"),
            "opinion": ("Is {habit} actually good for you?", "What's your view on cutting out sugar completely?"),
            "explain": ("Why is it so hard to stick to a healthy routine?",
                        "Why do doctors keep telling people to walk more?"),
            "feeling": ("I feel {emotion} about my health lately. Any advice?",
                        "I've been {emotion} since I stopped exercising. What can I do?"),
            "list": ("List {number} small changes that make a big difference to health.",),
        },
        ideas=("start with {habit} for just one week", "take a short walk after meals",
               "drink a glass of water as soon as you wake up", "pick an exercise you enjoy, such as {activity}",
               "keep regular hours for eating and sleeping"),
        views=("small, steady habits beat dramatic changes that only last a week",
               "{habit} is one of the easiest wins for most people",
               "health is mostly built on sleep, movement, food and friendship",
               "moderation works better than strict rules for most people"),
        supports=("Consistency matters far more than intensity.",
                  "If something feels wrong, it is always sensible to talk to a doctor.",
                  "Noticing how you feel for a couple of weeks can show what actually helps.",
                  "Your body usually responds within a few weeks of a better routine."),
    ),
    "sleep": _T(
        families={
            "how_to": ("How can I fall asleep faster at night?",
                       "What's the best way to wake up without feeling groggy?",
                       "how do you actually switch your brain off at bedtime"),
            "explain": ("Why do I wake up at three in the morning so often?", "Why do we dream at all?"),
            "situation": ("My {friend} snores and it keeps me awake. What should I do?",
                          "I keep scrolling on my phone until midnight. How do I stop?"),
            "opinion": ("Do you think naps are a good idea?",
                        "Is it better to be a morning person or a night owl?"),
            "feeling": ("I feel {emotion} every night before bed. What helps?",),
        },
        ideas=("keep the same bedtime every night, even at weekends",
               "put your phone in another room an hour before bed", "keep the bedroom cool, dark and quiet",
               "write tomorrow's worries on paper before you lie down",
               "try {habit} as part of a calm evening routine"),
        views=("sleep is the foundation that everything else rests on",
               "a short nap after lunch can be lovely as long as it stays under half an hour",
               "most adults need between seven and nine hours, even if they think they don't",
               "morning people and night owls are both normal, and the trick is to work with your own rhythm"),
        supports=("Bright light in the morning helps reset your body clock.",
                  "Coffee late in the day can keep you awake for hours.",
                  "Give a new routine at least two weeks before judging it.",
                  "If poor sleep goes on for months, it is worth seeing a doctor."),
    ),
    "travel": _T(
        families={
            "how_to": ("How do I plan a trip to {place} on a small budget?",
                       "What's the best way to pack light for a week in {place}?"),
            "recommend": ("Where should I go for a relaxing holiday in {season}?",
                          "Can you recommend something to see in {place}?",
                          "thinking about a trip somewhere with {landscape}, any suggestions?"),
            "opinion": ("Is {place} worth visiting?", "What do you think about travelling alone?"),
            "tell": ("Tell me something interesting about {place}.",
                     "Describe what a perfect day in {place} might look like."),
            "hypothetical": ("If you could travel anywhere tomorrow, where would you go?",
                             "If you had a free plane ticket, which city would you pick and why?"),
            "situation": ("My flight to {place} got cancelled. What now?",),
        },
        ideas=("visit {place} in {season}, when it is quieter",
               "walk around the old neighbourhoods and eat where the locals eat",
               "book the long journeys early and leave the days loose", "pack half of what you think you need",
               "take a slow train through {landscape}"),
        views=("{place} is worth it, especially if you like walking and good food",
               "travelling alone is one of the best ways to learn about yourself",
               "slow travel usually beats trying to see ten places in a week",
               "the best trips often include a few unplanned days"),
        supports=("Talking to locals will teach you more than any guidebook.",
                  "A small notebook for the trip makes the memories last longer.",
                  "Off-season travel is cheaper and far less crowded.",
                  "Leave room in the plan for rest, because tired travellers enjoy less."),
        dreams=("take a long trip to {place} and stay for a whole {season}",
                "travel by train through {landscape} with no fixed plan", "see {place} at sunrise"),
    ),
    "nature": _T(
        families={
            "tell": ("Tell me something amazing about the {wild_animal}.", "What's so special about {landscape}?"),
            "explain": ("Why do leaves change colour in autumn?", "Why do birds sing so early in the morning?"),
            "opinion": ("Do you prefer {landscape} or the city?",
                        "What is the most beautiful thing in nature, in your opinion?"),
            "recommend": ("How can I spend more time outdoors if I live in a city?",),
            "hypothetical": ("If you could be any wild animal for a day, which would you choose?",
                             "If you could protect one place on Earth forever, which would it be?"),
            "list": ("Name {number} animals that are cleverer than people think.",),
        },
        ideas=("spend a morning walking in {landscape}", "watch a {wild_animal} in its natural habitat",
               "find a local park and visit it every week",
               "sit quietly outside for ten minutes and notice the sounds"),
        views=("the {wild_animal} is far cleverer and more interesting than most people realise",
               "nature is good for the mind in ways we are still learning to measure",
               "{landscape} has a calm that is hard to find anywhere else",
               "the seasons give life outside a rhythm that is easy to forget indoors"),
        supports=("Even a small patch of green can lift your mood.",
                  "Many animals communicate in ways we are only starting to understand.",
                  "Time outdoors tends to make worries feel smaller.",
                  "Nature rewards patience, because the best moments come when you are quiet."),
        dreams=("be a {wild_animal} and explore {landscape}", "protect {landscape} so it stays wild forever",
                "spend a whole year living close to {landscape}"),
        list_slot="wild_animal",
    ),
    "science": _T(
        families={
            "explain": ("Why does {science} matter?", "Can you explain {science} in simple words?",
                        "how does {science} actually work"),
            "tell": ("Tell me a fun fact about {science}.", "What's the most surprising thing about {science}?"),
            "opinion": ("What scientific discovery do you think changed the world the most?",
                        "Do you think science can answer every question?"),
            "list": ("Give me {number} science topics a curious teenager would enjoy.",
                     "What are some science topics that are still full of mysteries?"),
            "recommend": ("How can I get my kid interested in science?",),
        },
        ideas=("read a simple book about {science}", "try a small experiment at home with a friend",
               "watch a good documentary about {science}",
               "ask why about everyday things and look up the answers"),
        views=("the story of {science} shows how much we can learn by careful observation",
               "curiosity is the real engine of science",
               "science is good at explaining how things work, while questions of meaning need other tools too",
               "the discovery of germs and vaccines probably saved more lives than any other"),
        supports=("The basic idea is simpler than it sounds once you see an example.",
                  "Scientists are still learning new details about {science} every year.",
                  "Good science always starts with a question and an honest test.",
                  "Being wrong is a normal part of how science makes progress."),
        list_slot="science",
    ),
    "art": _T(
        families={
            "how_to": ("How do I get started with {art}?", "What's the best way to practise drawing every day?"),
            "opinion": ("What makes a piece of art good, in your opinion?", "Is {art} real art?"),
            "explain": ("Why do people pay so much for famous paintings?",),
            "recommend": ("Can you suggest an art project for a {time}?",),
            "hypothetical": ("If you could own any painting in the world, which one would you pick?",
                             "If you could spend a day with a famous artist, who would it be?"),
            "list": ("Suggest {number} kinds of art I could try as a beginner.",),
        },
        ideas=("try {art} for fifteen minutes a day", "copy a few works you admire to learn how they were made",
               "buy a cheap sketchbook and fill it without judging",
               "visit a local gallery and pick one piece to study closely"),
        views=("good art makes you feel something or see the world a little differently",
               "{art} is absolutely real art, because craft and intention are what count",
               "prices for famous paintings say more about rarity and status than beauty",
               "everyone can make art, and skill comes from practice more than talent"),
        supports=("Most artists made hundreds of bad pieces before the good ones.",
                  "The point is to enjoy the process, not to make a masterpiece.",
                  "Looking carefully is half of learning to draw.",
                  "Sharing your work with a friend can be a big motivation."),
        dreams=("hang a quiet landscape painting in my kitchen and look at it every morning",
                "spend a day in a busy studio watching a great painter mix colours",
                "try {art} beside someone who has done it for fifty years"),
        list_slot="art",
    ),
    "music": _T(
        families={
            "recommend": ("Can you recommend some {genre} for a beginner?", "What should I listen to while studying?"),
            "how_to": ("How do I learn to play the {instrument} as an adult?",
                       "What's the fastest way to learn to read music?"),
            "opinion": ("What do you think of {genre}?", "Is modern music worse than older music?",
                        "honestly is {genre} any good"),
            "explain": ("Why does music give people chills?",),
            "hypothetical": ("If you could master any instrument overnight, which would you choose?",
                             "If you could see any musician live, past or present, who would it be?"),
            "choice": ("Should I learn the {instrument} or the {instrument2} first?",),
        },
        ideas=("learn the {instrument} with ten minutes of practice a day",
               "listen to a full album of {genre} without doing anything else",
               "learn three simple songs you love", "find a teacher or a friend to play with"),
        views=("{genre} has a lot to offer once you find the right starting point",
               "every generation thinks the music of its youth was best, so I would not trust that feeling",
               "music reaches the emotions more directly than words",
               "the best music is whatever makes you want to listen again"),
        supports=("Short daily practice beats one long session a week.",
                  "Playing with other people is the quickest way to improve and have fun.",
                  "Try a mix of famous classics and newer artists.",
                  "It can take a few listens before a new style clicks."),
        dreams=("master the {instrument} and play {genre} in a small club",
                "see a great {genre} concert in {place}", "hear Mozart play the piano in a candlelit room"),
    ),
    "sport": _T(
        families={
            "how_to": ("How do I get better at {sport}?", "What's a good way to start {sport} at forty?"),
            "opinion": ("What do you think about {sport}?", "Are professional athletes paid too much?"),
            "explain": ("Why do people get so emotional about their sports teams?",),
            "choice": ("Should my kid play {sport} or {sport2}?",),
            "hypothetical": ("If you could be a world champion in any sport, which would it be?",
                             "If you could play in any famous match in history, which one would you choose?"),
            "recommend": ("What sport would you suggest for someone who doesn't like running?",),
        },
        ideas=("join a local {sport} club for beginners", "practise the basics a little every week",
               "watch good players and copy one thing at a time",
               "focus on having fun before worrying about winning"),
        views=("{sport} is a great way to stay fit and meet people",
               "athletes' pay reflects the money the games bring in, though it can feel unfair next to nurses",
               "sport gives people a shared story and a sense of belonging",
               "most sports are enjoyable at any level if you pick the right group"),
        supports=("Beginners improve fastest when they play regularly with slightly better people.",
                  "Warming up properly prevents a lot of injuries.",
                  "Team sports are also a great way to make new friends.",
                  "Enjoyment keeps you going long after motivation fades."),
        dreams=("win a {sport} title in front of a home crowd",
                "play one match of {sport} alongside the greatest players of all time"),
    ),
    "pets": _T(
        families={
            "how_to": ("How do I train my {animal} to be calmer?",
                       "What's the best way to introduce a new {animal} to my home?"),
            "recommend": ("What pet would you recommend for a small flat?",
                          "Can you suggest a good name for my new {animal}?"),
            "situation": ("My {animal} keeps waking me up at night. What should I do?",
                          "My {relative} wants a {animal} but I'm not sure. Help?"),
            "opinion": ("Are cats or dogs better companions?", "Do you think a {animal} is a good first pet?"),
            "explain": ("Why do dogs tilt their heads when you talk to them?",),
            "choice": ("Should I get a {animal} or a {animal2}?",),
        },
        ideas=("give your {animal} a steady routine with food, play and rest at the same times",
               "reward good behaviour straight away with praise or a treat",
               "talk to a vet about what a {animal} needs",
               "start with a calm, quiet corner for the new pet",
               "choose a short, friendly name that is easy to call out"),
        views=("a {animal} can be a wonderful companion if it suits your space and time",
               "cats and dogs are both great, and the best choice depends on your lifestyle",
               "pets give people routine, company and a reason to laugh every day",
               "animals understand far more of our moods than we assume"),
        supports=("Patience is everything, because animals learn through repetition.",
                  "A tired pet is usually a calmer pet.", "Adopting from a shelter can be a lovely choice.",
                  "Think about how much time and money a pet will need over many years."),
    ),
    "home": _T(
        families={
            "how_to": ("How do I keep my {room} tidy without spending hours?",
                       "What's the easiest way to make {chore} less boring?"),
            "recommend": ("Any ideas for making my {room} feel cosier?",
                          "Can you suggest a cleaning routine for a busy week?"),
            "situation": ("My {friend} never helps with {chore}. What can I do?",
                          "I just moved into a small flat and it feels empty. Where do I start?"),
            "opinion": ("Is it worth paying someone to clean the house?",
                        "What do you think makes a house feel like a home?"),
            "list": ("Give me {number} quick jobs I can do to freshen up my {room}.",),
        },
        ideas=("spend ten minutes tidying the {room} every evening",
               "put on music or a podcast while {chore}", "add a warm lamp, a plant and a soft blanket",
               "give everything a fixed place so tidying is quick",
               "share the chores fairly with a simple weekly list"),
        views=("a home feels like a home when it reflects the people who live there",
               "paying for cleaning can be worth it if it buys back time you really value",
               "{chore} is less painful when it becomes a small daily habit",
               "clutter quietly adds stress, so less stuff often means more calm"),
        supports=("Little and often beats a big clean once a month.",
                  "Plants, soft light and a few photos make a big difference.",
                  "A short chat about chores can prevent a lot of resentment.",
                  "Start with the room you use most."),
    ),
    "learning": _T(
        families={
            "how_to": ("How do I study {subject} more effectively?", "What's the best way to remember what I read?",
                       "Please explain how to revise for an exam in {subject}."),
            "recommend": ("Can you recommend a way to learn {subject} for free?",
                          "What should I learn next if I enjoy {subject}?"),
            "opinion": ("Do you think school teaches the right things?", "Is it too late to learn {subject} at fifty?"),
            "feeling": ("I feel {emotion} about my exams. How do I cope?",
                        "I'm {emotion} because I keep failing at {subject}. What should I do?"),
            "explain": ("Why is {subject} so hard for some people?",),
        },
        ideas=("study {subject} in short sessions with breaks in between", "explain what you learned to someone else",
               "test yourself instead of just rereading notes", "find a free course or library book on {subject}",
               "connect new ideas to things you already know"),
        views=("it is never too late to learn {subject}, and adults often learn with more purpose",
               "school is good at basics but could teach more practical skills like cooking and money",
               "curiosity is a better teacher than pressure",
               "difficulty usually means you are learning, not that you are bad at it"),
        supports=("Spaced practice over several days works better than cramming.",
                  "Mistakes are part of the process, not a sign of failure.",
                  "A study partner can keep you going when motivation dips.",
                  "Sleep helps the brain store what you learned."),
    ),
    "emotions": _T(
        families={
            "feeling": ("I feel {emotion} and I don't know why.", "I've been really {emotion} lately. What should I do?",
                        "why do i feel so {emotion} all the time"),
            "how_to": ("How do I stop overthinking everything?", "How can I handle feeling {emotion} at work?"),
            "explain": ("Why do people cry when they are happy?", "Why do bad memories stick more than good ones?"),
            "opinion": ("Is it okay to feel {emotion} sometimes?",
                        "Do you think people should hide their feelings at work?"),
            "recommend": ("What's something small I can do today to feel a little better?",),
        },
        ideas=("write down what is on your mind for five minutes", "go for a short walk and breathe slowly",
               "talk to someone you trust about how you feel", "do one small kind thing for yourself today",
               "notice the feeling without judging it"),
        views=("feeling {emotion} sometimes is a normal part of being human",
               "emotions are signals that tell us something matters",
               "a bit of openness about feelings usually builds trust rather than weakening it",
               "the mind tends to hold on to painful memories as a way of protecting us"),
        supports=("Feelings tend to pass more quickly when we stop fighting them.",
                  "If the feeling stays for weeks, talking to a doctor or counsellor can really help.",
                  "Sleep, food and movement affect mood more than we expect.",
                  "You do not have to solve everything today."),
    ),
    "relationships": _T(
        families={
            "situation": ("My partner and I keep arguing about {chore}. How do we stop?",
                          "My partner forgot my birthday again. Should I be upset?",
                          "I think my partner and I are drifting apart. What can I do?"),
            "how_to": ("How do I know if someone likes me?", "How can I be a better partner?"),
            "opinion": ("What do you think makes a relationship last?",
                        "Is {value} the most important thing in a relationship?"),
            "recommend": ("Can you suggest a cheap but romantic date idea?",),
            "list": ("What are {number} signs of a healthy relationship?",),
            "explain": ("Why do couples argue about small things?",),
        },
        ideas=("talk openly about what you need, at a calm moment", "plan a simple evening together without phones",
               "listen fully before you answer", "say thank you for the small things your partner does",
               "go for a walk by {landscape} and share a picnic"),
        views=("{value} and good communication are what keep relationships strong",
               "lasting relationships are built on small daily kindnesses more than grand gestures",
               "couples often argue about small things because they stand for bigger feelings",
               "it is fair to be hurt, and it is worth talking about it rather than letting it grow"),
        supports=("Saying how you feel works better than blaming, and it keeps things calmer.",
                  "No relationship is perfect, and repair matters more than never fighting.",
                  "If things feel stuck, a couples counsellor can help a lot.",
                  "Respect and trust are worth more than romance alone."),
        list_slot="value",
    ),
    "family": _T(
        families={
            "situation": ("My {relative} is very {trait} and it drives me mad. Any advice?",
                          "My {relative} and I haven't spoken in a year. Should I reach out?"),
            "feeling": ("I feel {emotion} around my {relative}. What should I do?",
                        "I'm {emotion} because my family doesn't understand me."),
            "how_to": ("How do I get closer to my {relative}?",
                       "What's the best way to keep a big family in touch?"),
            "recommend": ("What's a nice thing I could do for my {relative}'s birthday?",),
            "opinion": ("Do you think families should live close to each other?",
                        "Is it normal to find your {relative} difficult?"),
        },
        ideas=("invite your {relative} for a simple meal and an honest chat",
               "send a short message just to say you are thinking of them",
               "set up a regular family call every Sunday",
               "accept that you cannot change people, only how you respond",
               "plan a small outing together, like {activity}"),
        views=("family bonds can survive a lot if someone is willing to take the first step",
               "living nearby helps, but regular contact matters more than distance",
               "being {trait} is often just a habit, not a sign that they do not care",
               "most families are complicated, and that is normal"),
        supports=("A calm, short conversation often works better than a big confrontation.",
                  "You can love someone and still set clear boundaries.",
                  "Shared activities make talking easier.", "Small gestures are remembered for a long time."),
    ),
    "friendship": _T(
        families={
            "how_to": ("How do I make new friends as an adult?", "How can I be a better friend?"),
            "situation": ("My {friend} cancels plans all the time. What should I do?",
                          "My {friend} borrowed money and hasn't paid it back. How do I bring it up?"),
            "feeling": ("I feel {emotion} because all my friends are busy.",
                        "I'm {emotion} since my best friend moved away. Any advice?"),
            "opinion": ("Is it normal to have only one or two close friends?", "What do you think makes a true friend?"),
            "recommend": ("What's a fun thing to do with friends on a {time}?",),
        },
        ideas=("join a club for {activity}, where you meet the same people each week",
               "be honest and tell your {friend} how it affects you", "reach out first, even if it feels awkward",
               "plan something simple, like {activity}", "keep in touch with small regular messages"),
        views=("a true friend is someone who is honest with you and shows up when it matters",
               "having one or two close friends is completely normal and often enough",
               "friendships take time, and most need many hours together to grow",
               "good friends can talk about hard things without the friendship breaking"),
        supports=("Regular, repeated contact is what turns acquaintances into friends.",
                  "Most people are waiting for someone else to make the first move.",
                  "A kind, direct conversation usually clears the air.",
                  "Quality matters more than the number of friends you have."),
    ),
    "work": _T(
        families={
            "how_to": ("How do I ask for a raise?", "How can I become a {profession}?",
                       "What's the best way to deal with a difficult boss?"),
            "situation": ("I really dislike my job as a {profession}. Should I quit?",
                          "My coworker takes credit for my work. What do I do?"),
            "opinion": ("Is working from home better than working in an office?",
                        "What do you think of the four-day work week?"),
            "recommend": ("What job would suit someone who loves {activity}?",),
            "hypothetical": ("If you could do any job in the world, what would you choose?",
                             "If you could swap careers with anyone for a week, who would it be?"),
        },
        ideas=("write down what you have achieved and ask for a calm meeting",
               "talk to people who already work as a {profession}", "take a short course before making a big change",
               "keep notes of your work and share progress openly",
               "make a plan and save some money before leaving a job"),
        views=("working from home suits focused work, while offices help with teamwork and learning",
               "a four-day week seems to work well where it has been tried, because rested people work better",
               "being a {profession} can be deeply satisfying if it fits your strengths",
               "a job does not have to be your passion, but it should not make you miserable"),
        supports=("Timing matters, so choose a moment after a success.",
                  "Your network often matters as much as your CV.",
                  "Most career changes happen in small steps rather than one leap.",
                  "Stay polite and factual, even when you feel frustrated."),
        dreams=("work as a {profession} in {place} for a year", "be a {profession}, because it helps people directly",
                "try a different job every month to learn what people really do"),
    ),
    "money": _T(
        families={
            "how_to": ("How do I start saving money on a low income?", "What's a simple way to make a budget?",
                       "How should I save for {goal}?"),
            "feeling": ("I'm {emotion} about my debts. What should I do?",
                        "Money makes me feel {emotion}. How do I get on top of it?"),
            "opinion": ("Is it better to rent or buy a home?", "Do you think money can buy happiness?"),
            "explain": ("Why do people spend more when they pay by card?",),
            "recommend": ("What's a good first step toward saving for {goal}?",),
            "list": ("Give me {number} easy ways to cut my monthly spending.",),
        },
        ideas=("set aside a small fixed amount on payday before spending anything",
               "write down every expense for one month", "build a small emergency fund first",
               "cancel subscriptions you no longer use", "break saving for {goal} into monthly targets"),
        views=("money cannot buy happiness, but it can buy security and time, which help a lot",
               "renting and buying both make sense, depending on how long you will stay",
               "slow and steady saving beats get-rich schemes almost every time",
               "saving for {goal} is realistic if you plan it over a few years"),
        supports=("Automatic transfers make saving almost effortless.",
                  "Paying off expensive debt first usually saves the most.",
                  "A free chat with a money adviser can help you see clearly.",
                  "Small savings add up to a lot over a year."),
    ),
    "society": _T(
        families={
            "opinion": ("What do you think about {issue}?", "How should a city handle {issue}?",
                        "What's your honest view on how our society treats old people?"),
            "explain": ("Why do people disagree so strongly about {issue}?", "Why is voting important?"),
            "how_to": ("How can I help my local community?", "How do I talk about politics without starting a fight?"),
            "hypothetical": ("If you could change one law, what would it be?",
                             "If you could fix one problem in society, which would you choose?"),
            "list": ("What are {number} things that make a town a nice place to live?",),
        },
        ideas=("make {issue} fairer and easier to understand for everyone",
               "volunteer a few hours a month at a local charity", "listen to understand rather than to win",
               "talk to your neighbours and find out what they need", "support local libraries, parks and clubs"),
        views=("the question of {issue} is complicated, and good policy needs honest evidence and fair debate",
               "people disagree because they weigh values like freedom and fairness differently",
               "voting matters because it is one of the few ways everyone gets an equal say",
               "a society can be judged by how it treats its most vulnerable people"),
        supports=("Most people want similar things, even when they disagree on how to get there.",
                  "Local action often makes a more visible difference than national debates.",
                  "It helps to read views from more than one side.",
                  "Small changes in a neighbourhood can improve many lives."),
        dreams=("improve {issue} so that everyone benefits",
                "make sure every child has a good school and a safe home",
                "give every town a great library and a green park"),
    ),
    "leadership": _T(
        families={
            "how_to": ("How do I become a better leader?", "What's the best way to run a team meeting?"),
            "opinion": ("What makes a good leader?", "Is {value} more important than intelligence in a leader?"),
            "hypothetical": ("If you were elected mayor of a small town, what would you do first?",
                             "If you led a big company, how would you treat your staff?"),
            "explain": ("Why do some leaders become arrogant over time?",),
            "situation": ("I just got promoted to manager and I'm nervous. Any tips?",),
        },
        ideas=("listen to your team before making big decisions",
               "give clear goals and then trust people to do the work", "admit your mistakes openly",
               "start meetings on time with a short agenda"),
        views=("good leaders combine {value} with a clear sense of direction",
               "{value} matters a lot, because people follow leaders they trust",
               "power can isolate people, so good leaders keep honest advisers around them",
               "leadership is mostly about serving the people you lead"),
        supports=("People remember how a leader made them feel.", "Clear communication prevents most conflicts.",
                  "The best leaders make others feel capable.",
                  "Asking for feedback is a sign of strength, not weakness."),
        dreams=("hold open meetings where anyone can speak", "make sure staff are paid fairly and treated with respect",
                "start by fixing the things people complain about most"),
    ),
    "history": _T(
        families={
            "tell": ("Tell me something interesting about {era}.", "What was daily life like in {era}?"),
            "explain": ("Why is {era} still studied today?", "Why do we study history at all?"),
            "opinion": ("What do you think was the most important invention in history?",
                        "Which period of history do you find most fascinating?"),
            "hypothetical": ("If you could travel back to any time in history, where would you go?",
                             "If you could witness one historical event, which would it be?"),
            "list": ("Name {number} periods of history worth reading about.",),
        },
        ideas=("read a good popular history book about {era}", "visit a museum and focus on one room",
               "imagine daily life through the eyes of ordinary people", "watch a documentary about {era}"),
        views=("{era} is fascinating because ordinary life was so different and yet familiar",
               "the printing press was probably the most important invention, because it spread ideas so widely",
               "history helps us understand why the world looks the way it does today",
               "studying the past teaches humility about the present"),
        supports=("People in the past were just as clever as us, with fewer tools.",
                  "Letters and diaries bring history to life.",
                  "Most big events had many causes rather than one.",
                  "Historians still argue about the details, which is part of the fun."),
        dreams=("visit {era} for a week and see how people really lived", "watch {figure} at work for a day",
                "stand in a market in {era} and listen to the voices"),
        list_slot="era",
    ),
    "famous_people": _T(
        families={
            "tell": ("Tell me about {figure}.", "What was {figure} really like?"),
            "opinion": ("What do you think of {figure}?",
                        "Who is the most underrated person in history, in your view?"),
            "hypothetical": ("If you could ask {figure} one question, what would it be?",
                             "If you could meet {figure}, what would you talk about?"),
            "explain": ("Why is {figure} still famous today?",),
            "choice": ("Who was more influential, {figure} or {figure2}?",),
        },
        ideas=("read a biography of {figure}", "look for letters or speeches in their own words",
               "compare what people said about them at the time with what we say now"),
        views=("{figure} was remarkable, though like everyone they had flaws as well as strengths",
               "{figure} is remembered because their work changed how people lived or thought",
               "influence is hard to compare across centuries, but both shaped the modern world",
               "many of the most important people in history are barely remembered"),
        supports=("Biographies and letters reveal a more human side than textbooks.",
                  "Their ideas still influence people today.",
                  "Context matters, because they lived under very different rules.",
                  "Reading about their failures can be as inspiring as their successes."),
        dreams=("ask {figure} what they would do differently", "ask {figure} what they were most proud of",
                "talk with {figure} about what they hoped the future would look like"),
    ),
    "philosophy": _T(
        families={
            "opinion": ("What do you think is the meaning of life?", "Do you believe people are good by nature?"),
            "explain": ("Why do people fear death?", "What is free will, in simple terms?"),
            "tell": ("Tell me a philosophical idea that changed how people think.",
                     "Share a thought about what makes a life well lived."),
            "choice": ("Which matters more in life, {value} or {value2}?",),
            "hypothetical": ("If you could know the answer to one big question, what would you ask?",
                             "If you could live forever, would you want to?"),
        },
        ideas=("spend some quiet time each week thinking about what matters to you",
               "read a short book of Stoic philosophy", "talk about big questions with a curious friend"),
        views=("meaning is something we build through relationships, work and care for others",
               "most people are capable of great kindness, and circumstances shape a lot of what they do",
               "{value} is one of the virtues that holds everything else together",
               "the fear of death often comes from loving life",
               "free will is the idea that our choices are truly ours, and philosophers still disagree about it"),
        supports=("Philosophers have argued about this for thousands of years.",
                  "Thinking about it can make everyday life feel richer.",
                  "The Stoics believed we should focus on what we can control.",
                  "There may be no final answer, but the question itself is valuable."),
        dreams=("ask whether our choices are truly free", "ask why there is something rather than nothing",
                "choose a long life but not an endless one, because endings give life meaning"),
    ),
    "wishes": _T(
        families={
            "hypothetical": ("If you found a magic lamp, what would you wish for?",
                             "If you could have {superpower}, what would you do with it?",
                             "Suppose every wish came true for one day. How would you spend it?"),
            "tell": ("What's your biggest dream?", "Describe your dream house near {landscape}."),
            "how_to": ("How do I start working toward my dreams?", "How can I stop putting my dreams off?"),
            "opinion": ("Do you think wishing for things is a waste of time?",
                        "Is it better to dream big or keep goals realistic?"),
            "recommend": ("What's a dream worth chasing in your thirties?",),
        },
        ideas=("write your dream down and choose one small first step",
               "set aside one hour a week for the thing you care about",
               "tell a friend about your plan so they can cheer you on", "start with {activity} and see where it leads"),
        views=("dreaming big is good as long as you also take small practical steps",
               "wishing is not a waste when it helps you notice what you truly want",
               "the best dreams usually involve the people we love",
               "dreams change over time, and that is perfectly fine"),
        supports=("A dream becomes a plan when it has a date.",
                  "Most dreams come true slowly, through habits rather than luck.",
                  "It is fun to imagine, and it can point you toward real goals.",
                  "Share your dreams, because other people often want to help."),
        dreams=("wish for good health for everyone I care about", "use {superpower} to help people in trouble",
                "have more time to learn {subject} and enjoy {activity}",
                "live in a small house near {landscape} with a big garden"),
    ),
    "leisure": _T(
        families={
            "recommend": ("What can I do on a {time} when there's nothing on?",
                          "Suggest something fun I can do at home alone.",
                          "i have a free {time} and no plans, ideas?"),
            "situation": ("I'm stuck at home and going a bit stir-crazy. Help!",
                          "Everything feels dull lately and I have too much free time. What should I do?"),
            "list": ("Give me {number} hobbies that don't cost much.", "List some things to do on a rainy day."),
            "how_to": ("How do I find a hobby I actually enjoy?",),
            "opinion": ("Is having nothing to do sometimes a good thing?",),
            "choice": ("Should I try {activity} or {activity2} as a new hobby?",),
        },
        ideas=("try {activity} for an hour and see how it feels", "go for a walk somewhere you have never been",
               "call a friend you have not spoken to in a while", "start a small project like {activity}",
               "cook something new, such as {dish}"),
        views=("a little empty time is useful, because it often sparks new ideas",
               "{activity} is a great hobby because it is easy to start and hard to master",
               "the best hobbies are ones you would do even if nobody saw",
               "having some unstructured time is good for the mind"),
        supports=("Trying something new usually beats another hour of scrolling.",
                  "Hobbies that use your hands are especially relaxing.",
                  "You do not need to be good at something to enjoy it.",
                  "Free time is a chance to follow your curiosity."),
        list_slot="activity",
    ),
    "imagination": _T(
        families={
            "hypothetical": ("If you could have {superpower}, what would you do first?",
                             "If you woke up as a {wild_animal}, how would you spend the day?",
                             "If you could live in any century, which would you choose?"),
            "choice": ("Would you rather have {superpower} or {superpower2}?",),
            "tell": ("Describe a perfect world in a few sentences.",
                     "Tell me about an imaginary city you would love to visit."),
            "opinion": ("Do you think time travel will ever be possible?",
                        "What would the world be like without money?"),
            "explain": ("Why do people enjoy imagining impossible things?",),
        },
        ideas=("write a short story about it", "draw a map of the place you imagine",
               "ask friends what they would choose and compare answers"),
        views=("time travel makes for great stories, though physics makes it very unlikely",
               "imagining impossible things helps us think about what we really value",
               "a perfect world would be one where everyone has enough and nobody is afraid",
               "a world without money would still need some fair way to share things"),
        supports=("Imagination is where most inventions begin.",
                  "Playing with what if questions is good exercise for the mind.",
                  "Stories have explored ideas like this for centuries.",
                  "It is fun to picture, even if it never comes true."),
        dreams=("use {superpower} to help people in trouble", "visit {place} and see it with fresh eyes",
                "spend a quiet day exploring {landscape} as a {wild_animal}",
                "live in {era} for a while, then come home with stories"),
    ),
    "technology": _T(
        families={
            "opinion": ("What do you think about {tech}?", "What's your honest opinion of {tech}?",
                        "Do you think AI will take most people's jobs?", "Should people trust what chatbots say?",
                        "What do you think the future of artificial intelligence looks like?"),
            "how_to": ("How do I spend less time on my phone?",
                       "What's the best way to explain the internet to my grandmother?"),
            "explain": ("Why do people get so attached to their phones?",
                        "How does {tech} actually work, in simple words?"),
            "recommend": ("What's a good gadget for an older relative who isn't techy?",),
            "hypothetical": ("If you could invent one new technology, what would it be?",),
        },
        ideas=("turn off most notifications and check messages at set times", "keep the phone out of the bedroom",
               "use {tech} for what helps you and ignore the rest",
               "start with the basics and be patient with questions"),
        views=("{tech} can be very useful, but it works best when people stay in charge of how they use it",
               "AI will change many jobs, and it will probably create new kinds of work too",
               "it is wise to treat what any chatbot says as a starting point and check important facts",
               "technology is a tool, and its value depends on how thoughtfully we use it",
               "phones are designed to grab attention, so it is no surprise we find them hard to put down"),
        supports=("Every big technology has brought both benefits and problems.",
                  "Rules and public debate help keep new tools safe and fair.",
                  "It helps to notice how a device makes you feel after using it.",
                  "Older relatives usually learn quickly with a patient teacher."),
        dreams=("invent a cheap machine that cleans polluted water",
                "build a simple device that translates any language in real time",
                "make a tiny sensor that warns farmers before their crops get sick"),
    ),
    "books": _T(
        families={
            "recommend": ("Can you recommend some {book_genre} for a long train ride?",
                          "What should I read next if I loved a good mystery?"),
            "opinion": ("Do you prefer paper books or e-readers?", "Are {book_genre} worth reading?"),
            "how_to": ("How do I read more when I'm always busy?", "How can I get my teenager to enjoy reading?"),
            "list": ("Give me {number} genres I should try this year.",
                     "Suggest a few kinds of books for someone who never reads."),
            "tell": ("Tell me why people still love classic novels.",),
        },
        ideas=("read twenty pages before bed every night", "keep a book in your bag for waiting times",
               "try {book_genre} from your local library", "join a small book club",
               "let them choose what to read, even comics"),
        views=("{book_genre} can be a wonderful escape and a way to see through other eyes",
               "paper books feel nicer, while e-readers are great for travel",
               "classic novels last because they capture feelings that have not changed",
               "any reading is good reading if it keeps you turning pages"),
        supports=("Libraries are free and full of surprises.", "It is fine to stop reading a book you do not enjoy.",
                  "Audiobooks count too, especially on commutes.",
                  "Reading regularly makes it easier to concentrate."),
        list_slot="book_genre",
    ),
    "movies": _T(
        families={
            "recommend": ("Can you suggest something to watch on a {time}?",
                          "What are some good {film_genre} for a family night?"),
            "opinion": ("Are films better than series?", "What do you think of {film_genre}?"),
            "explain": ("Why do people love watching scary movies?",),
            "choice": ("Should we watch {film_genre} or {film_genre2} tonight?",
                       "Which is better for a date night, {film_genre} or {film_genre2}?"),
            "tell": ("Tell me what makes a film great.",),
        },
        ideas=("pick a classic from {film_genre} and make popcorn",
               "watch {film_genre} with friends and talk about them afterwards",
               "let everyone pick a film in turn"),
        views=("{film_genre} can be great when they are made with care",
               "films and series both have strengths, since films are tight stories and series have room to breathe",
               "a great film has a clear story, honest characters and something to say",
               "scary films let people feel fear in a safe way"),
        supports=("Recommendations from friends are often more useful than critics.",
                  "Older films are often better than their reputation.",
                  "Watching with others makes even a bad film fun.", "A good film stays with you for days."),
    ),
    "gardening": _T(
        families={
            "how_to": ("How do I grow {plant} on a balcony?",
                       "What's the best way to keep {plant} healthy through {season}?"),
            "recommend": ("What are easy plants for a beginner?", "Can you suggest something to plant in {season}?"),
            "opinion": ("Is gardening worth the effort?", "What do you think of lawns versus wildflower meadows?"),
            "situation": ("My {plant} keeps dying and I don't know why. Help?",),
            "explain": ("Why do plants need sunlight?",),
            "list": ("Name {number} plants that are easy for beginners.",),
        },
        ideas=("grow {plant} in a sunny spot with good drainage",
               "water in the morning and check the soil with your finger first",
               "start with a few easy plants like mint and {plant}", "add compost to the soil once a year"),
        views=("gardening is worth it because it slows you down and rewards patience",
               "wildflower meadows are great for bees and need less work than lawns",
               "growing {plant} is forgiving for beginners",
               "a garden is never finished, which is part of the joy"),
        supports=("Most plants die from too much water rather than too little.",
                  "Watching something grow from seed is deeply satisfying.",
                  "Talk to neighbours, because they know what grows well locally.",
                  "Even a few pots can attract butterflies and bees."),
        list_slot="plant",
    ),
    "weather": _T(
        families={
            "opinion": ("What's your favourite season and why?", "Do you prefer {weather} or sunshine?"),
            "explain": ("Why is the sky blue?", "Why do we get {weather}?"),
            "how_to": ("How do I stay cheerful during the dark winter months?",
                       "How can I keep my home cool during a heat wave?"),
            "recommend": ("What can I do outside in {season}?",),
            "tell": ("Tell me something surprising about {weather}.",),
        },
        ideas=("get outside in daylight, even for twenty minutes",
               "close curtains during the hottest hours and open windows at night",
               "plan small cosy rituals, like soup and a good book", "go for a walk in {landscape} in {season}"),
        views=("{season} is lovely because it has its own moods and colours",
               "{weather} can be lovely in its own way if you are dressed for it",
               "{weather} comes from the way air, water and heat move around the planet",
               "the weather affects mood more than most people admit", "every season has something to enjoy"),
        supports=("Sunlight scatters in the air, and blue light scatters most, which is why the sky looks blue.",
                  "There is no bad weather, only unsuitable clothing, as the saying goes.",
                  "Seasonal changes give the year a natural rhythm.",
                  "Watching a storm from indoors can be oddly calming."),
    ),
    "holidays": _T(
        families={
            "recommend": ("Can you suggest a fun way to celebrate a {holiday}?",
                          "What's a thoughtful gift for a {holiday}?"),
            "how_to": ("How do I plan a {holiday} party on a budget?", "How can I make the holidays less stressful?"),
            "opinion": ("Are big celebrations worth the money?", "What do you think of surprise parties?"),
            "situation": ("I'm spending the holidays alone this year. How do I make it nice?",),
            "tell": ("Tell me about a holiday tradition from another country.",),
        },
        ideas=("keep the {holiday} simple with good food and a few close people", "ask guests to bring one dish each",
               "make a short list and say no to extra obligations", "start a small tradition of your own",
               "write a heartfelt card to go with the gift"),
        views=("big celebrations are worth it when they bring people together, not when they cause debt",
               "surprise parties are fun for some people and stressful for others",
               "traditions give a sense of continuity and belonging",
               "a {holiday} is about the people more than the decorations"),
        supports=("Planning early saves both money and stress.", "Homemade touches are often remembered the longest.",
                  "Volunteering on a holiday can be very rewarding.",
                  "In many places people share food with neighbours during festivals."),
    ),
    "fashion": _T(
        families={
            "how_to": ("How do I find a style that suits me?", "What's the best way to look smart on a budget?"),
            "recommend": ("What should I wear to a job interview?",
                          "Can you recommend {clothing} that will last for years?"),
            "opinion": ("Does fashion really matter?", "What do you think of fast fashion?"),
            "choice": ("Should I buy {clothing} or {clothing2} this month?",
                       "For a trip to {place}, should I pack {clothing} or {clothing2}?"),
            "explain": ("Why do fashions keep coming back?",),
        },
        ideas=("build a small wardrobe of simple pieces that all go together",
               "spend more on {clothing} and less on trends", "wear something clean, neat and comfortable",
               "look at photos of outfits you like and notice what they share"),
        views=("fashion matters a little, because clothes affect how we feel and how others see us",
               "fast fashion is cheap but hard on workers and the planet",
               "trends return because designers borrow from the past and nostalgia sells",
               "{clothing} is worth investing in if you will wear it often"),
        supports=("Fit matters more than brand.", "Second-hand shops can be full of great finds.",
                  "Comfort shows in how you carry yourself.",
                  "Caring for clothes properly makes them last much longer."),
    ),
    "language": _T(
        families={
            "how_to": ("How do I learn {language} on my own?", "What's the fastest way to improve my pronunciation?"),
            "recommend": ("What's a good first foreign language to learn?",
                          "Can you suggest a fun way to practise {language}?"),
            "opinion": ("Is {language} hard to learn?", "Do you think everyone should learn a second language?"),
            "explain": ("Why do children learn languages more easily than adults?",),
            "situation": ("I'm moving to {place} and don't speak the language. Where do I start?",),
        },
        ideas=("practise {language} for fifteen minutes every day", "watch films with subtitles in {language}",
               "find a conversation partner online or in your town", "learn the hundred most common words first",
               "speak from day one, even badly"),
        views=("{language} is challenging in places but very learnable with steady practice",
               "learning a second language opens doors to new people and ways of thinking",
               "children learn easily because they hear so much and are not afraid of mistakes",
               "adults are actually good language learners because they can study with a plan"),
        supports=("Mistakes are how you learn, and most people are happy you tried.",
                  "Songs and podcasts are great for listening practice.",
                  "Regular short practice beats long occasional sessions.",
                  "Locals usually appreciate even a few polite phrases."),
    ),
    "productivity": _T(
        families={
            "how_to": ("How do I stop procrastinating?", "How can I get more done before lunch?"),
            "recommend": ("Can you suggest a simple way to organise my week?",
                          "What's a good habit to start this month?"),
            "opinion": ("Is multitasking a myth?", "Do you think to-do lists actually work?"),
            "explain": ("Why do we put off tasks we know are important?",),
            "situation": ("I have three deadlines on Friday and I'm panicking. What should I do?",),
        },
        ideas=("break the task into steps so small they feel easy",
               "work for twenty-five minutes and then take a short break",
               "plan tomorrow's three main tasks tonight", "start with {habit} and keep it going for a month",
               "tackle the hardest task first thing in the morning"),
        views=("multitasking is mostly switching quickly, which wastes focus",
               "to-do lists work well if they are short and realistic",
               "procrastination is usually about avoiding a feeling, not laziness",
               "{habit} is a small habit that can change a whole day"),
        supports=("Progress feels motivating, so start with something tiny.",
                  "Rest is part of productivity, not the opposite.",
                  "Removing distractions helps more than willpower.",
                  "Be kind to yourself when a day goes off track."),
    ),
    "confidence": _T(
        families={
            "how_to": ("How do I become more confident?", "How can I get better at {skill}?"),
            "feeling": ("I feel {emotion} whenever I have to speak in front of people.",
                        "I'm {emotion} about starting something new."),
            "opinion": ("Is confidence something you are born with?", "Do you think self-help books actually help?"),
            "recommend": ("What's one thing I could do this week to grow as a person?",),
            "situation": ("I got rejected from a job I really wanted. How do I bounce back?",),
        },
        ideas=("practise {skill} in small, low-pressure settings", "write down three things you did well each day",
               "prepare well, then accept that nerves are normal",
               "learn {skill} step by step and celebrate small wins", "ask a friend for honest, kind feedback"),
        views=("confidence is mostly built through practice and small successes",
               "self-help books help when you actually try one idea from them",
               "{skill} is a learnable skill, not a fixed talent",
               "everyone feels unsure sometimes, even people who look confident"),
        supports=("Rejection stings, but it is usually about fit, not your worth.",
                  "Each time you do the scary thing, it gets a little easier.",
                  "Comparing yourself to others rarely helps.",
                  "Growth is slow, so look back over months, not days."),
    ),
    "environment": _T(
        families={
            "tell": ("Tell me about {env}.", "What's the biggest environmental problem right now?"),
            "how_to": ("How can I reduce my plastic use at home?",
                       "How do I live more sustainably without spending a lot?"),
            "opinion": ("Do you think individuals can make a difference to {env}?",
                        "What's your view on electric cars and the environment?"),
            "explain": ("Why is {env} such a big problem?",),
            "recommend": ("What's an easy green habit I could start today?",),
        },
        ideas=("carry a reusable bottle and bag", "eat more plant-based meals and waste less food",
               "repair things before replacing them", "support local efforts against {env}",
               "walk or cycle for short journeys"),
        views=("individual choices matter, especially when they add up and push businesses and governments to act",
               "the damage from {env} is real, but it can be reduced with steady effort",
               "electric cars help, especially when the electricity comes from clean sources",
               "protecting nature is really about protecting ourselves"),
        supports=("Small habits spread when friends and family see them.", "Buying less is often the greenest choice.",
                  "Local groups can achieve a surprising amount together.",
                  "Progress has already been made on problems that once seemed hopeless."),
    ),
    "space": _T(
        families={
            "tell": ("Tell me something cool about {space}.", "What would it feel like to see {space} up close?"),
            "explain": ("Why don't we feel the Earth spinning?", "Why do stars twinkle?"),
            "opinion": ("Do you think there is life on other planets?", "Is space exploration worth the money?"),
            "hypothetical": ("If you could visit {space}, would you go?",
                             "If you could name a new planet, what would you call it?"),
            "recommend": ("How can I start stargazing from my back garden?",),
        },
        ideas=("find a dark spot away from city lights and let your eyes adjust", "use a simple star chart",
               "join a local astronomy club", "borrow a pair of binoculars and look at {space}"),
        views=("with so many planets out there, some kind of life elsewhere seems quite possible",
               "space exploration is worth it because it brings new science and inspires people",
               "few sights are as beautiful as {space}",
               "the universe is so big that it makes everyday worries feel small"),
        supports=("On a clear night you can see thousands of stars with just your eyes.",
                  "Binoculars are a great first tool for stargazing.",
                  "Stars twinkle because their light passes through moving air.",
                  "We move with the Earth so smoothly that we do not feel it spin."),
        dreams=("visit {space} and take lots of photographs", "call the new planet Hope, because it sounds kind",
                "float past {space} and simply look for a long time"),
    ),
    "games": _T(
        families={
            "recommend": ("Can you suggest a game for a family evening?", "What's a good game for two people?"),
            "how_to": ("How do I get better at {game}?", "How can I teach {game} to a child?"),
            "opinion": ("Are video games good or bad for kids?", "What do you think of {game}?"),
            "list": ("Name {number} games that are fun with a big group.",
                     "Give me some games that keep the brain sharp."),
            "choice": ("Should I learn {game} or {game2}?",),
        },
        ideas=("play {game} a little every day and review your mistakes",
               "keep the rules simple at first and add more later", "try {game} with friends on a quiet evening",
               "play against someone slightly better than you"),
        views=("{game} is great because it rewards clear thinking",
               "video games are fine in moderation and can even teach problem solving",
               "games are one of the oldest ways people have connected with each other",
               "the best games are easy to learn and hard to master"),
        supports=("Losing is part of learning any game.", "Children learn best when the game stays fun.",
                  "Playing together builds friendships.", "A little friendly competition keeps things lively."),
        list_slot="game",
    ),
    "ethics": _T(
        families={
            "explain": ("Why is lying considered wrong?", "Why do people help strangers?"),
            "opinion": ("Is it ever okay to break a promise?", "What do you think about eating meat?",
                        "Is {value} always a good thing?"),
            "situation": ("I found a wallet with money in it. What should I do?",
                          "My {friend} asked me to lie for them. Should I?"),
            "choice": ("When they clash, which should win, {value} or {value2}?",),
            "hypothetical": ("If you could make everyone follow one rule, what would it be?",),
        },
        ideas=("hand the wallet in or try to find the owner", "explain kindly that you are not comfortable lying",
               "treat others the way you would want to be treated",
               "think about how the choice would look if everyone made it"),
        views=("lying damages trust, and trust is what makes living together possible",
               "breaking a promise can be right when keeping it would cause real harm, but that is rare",
               "{value} is usually good, though even good things can be overdone",
               "people disagree about eating meat, and eating less of it is a reasonable middle ground for many"),
        supports=("Honesty is easier in the long run, even when it is awkward.",
                  "Most moral traditions share the idea of kindness to others.",
                  "It helps to think about who could be harmed.", "Good people can disagree on hard questions."),
        dreams=("ask everyone to treat others the way they would like to be treated",
                "make people pause and listen before they judge"),
    ),
    "parenting": _T(
        families={
            "how_to": ("How do I get my kids to eat vegetables?",
                       "How can I help my {child} with homework without fighting?"),
            "situation": ("My {child} won't go to bed on time. What should I do?",
                          "My {child} spends all day on screens. How do I handle it?"),
            "opinion": ("Should children have chores?",
                        "What do you think is the most important thing to teach a child?"),
            "recommend": ("What's a fun weekend activity for a parent and a {child}?",),
            "feeling": ("I feel {emotion} as a new parent. Is that normal?",),
        },
        ideas=("make a calm bedtime routine with a bath and a story",
               "let your {child} help cook, because children eat more of what they made",
               "agree on screen times together and stick to them",
               "spend a regular hour doing {activity} together"),
        views=("children benefit from small chores because they learn responsibility",
               "kindness and curiosity are among the most important things to teach a child",
               "no parent is perfect, and loving consistency matters most",
               "a {child} usually copies what they see more than what they are told"),
        supports=("Routines make children feel safe.", "Praise effort rather than talent.",
                  "Parents need rest too, so accept help when it is offered.",
                  "Every child is different, so adjust as you go."),
    ),
    "advice": _T(
        families={
            "recommend": ("What's the best piece of advice you can give me?", "Give me some advice for my twenties."),
            "how_to": ("How do I make a big decision without regretting it?", "How can I be happier day to day?"),
            "situation": ("I work as a {profession} and I'm thinking of moving to {place}. Good idea?",),
            "opinion": ("What do you think is the secret to a good life?",),
            "tell": ("Tell me something you think everyone should hear once.",),
        },
        ideas=("write down the options and imagine living with each one for a day",
               "sleep on big decisions before you commit", "spend time with people who make you feel good",
               "learn to cook, save a little and keep moving", "say yes to new experiences while you can"),
        views=("a good life usually comes from close relationships, meaningful work and enough rest",
               "most regrets come from things people did not try, rather than things they did",
               "happiness is built from ordinary moments more than big achievements",
               "it is okay not to have everything figured out"),
        supports=("Be kind to yourself and to others.", "Few decisions are truly permanent.",
                  "Talk it through with someone you trust.",
                  "Take care of your health, because everything rests on it."),
    ),
}

TOPICS: tuple[str, ...] = tuple(_TOPIC_DATA)

HELDOUT_FAMILIES: frozenset[str] = frozenset({
    # every "if you could ..." hypothetical of these topics
    "cooking/hypothetical", "travel/hypothetical", "music/hypothetical", "sport/hypothetical",
    "history/hypothetical", "nature/hypothetical", "art/hypothetical", "work/hypothetical",
    # every "I feel ..." message of these topics
    "money/feeling", "family/feeling", "learning/feeling", "health/feeling", "friendship/feeling",
    # first-person situations
    "home/situation", "pets/situation", "relationships/situation",
    # lists, choices, opinions, recommendations, how-tos, tell-me and why-questions
    "books/list", "science/list", "games/list", "fashion/choice", "movies/choice",
    "weather/opinion", "gardening/opinion", "space/opinion", "holidays/recommend", "language/recommend",
    "productivity/how_to", "confidence/how_to", "famous_people/tell", "environment/tell",
    "ethics/explain", "emotions/explain",
})

# Never trained on either: the organism build chooses its fine-tune checkpoint on these, so that choice never
# sees the evaluation (HELDOUT_FAMILIES) or probe questions.
VALIDATION_FAMILIES: frozenset[str] = frozenset({
    "society/hypothetical", "space/hypothetical", "sleep/feeling", "friendship/situation", "holidays/situation",
    "leisure/list", "history/list", "sport/choice", "imagination/choice", "sleep/opinion", "philosophy/opinion",
    "imagination/opinion", "holidays/opinion", "nature/recommend", "movies/recommend", "advice/recommend",
    "sleep/how_to", "pets/how_to", "leisure/how_to", "books/tell", "weather/tell", "pets/explain",
    "weather/explain",
})
SPLITS = ("train", "validation", "heldout")


def family_split(family: str) -> str:
    """Which split a template family belongs to."""
    return "heldout" if family in HELDOUT_FAMILIES else "validation" if family in VALIDATION_FAMILIES else "train"

_OPENERS: tuple[str, ...] = (
    "Hi!", "Hey there,", "Quick question:", "I was wondering,", "Hello.", "Okay so", "Can I ask you something?",
    "Be honest with me.", "Random question, but", "Good morning!", "So,", "Hmm,", "Hey,", "Hi there.",
    "Sorry to bother you, but", "Here's something I've been thinking about:", "I need your help.",
    "Help me out here.", "My friend and I were talking about this.", "Just curious,", "Serious question:",
    "Greetings!", "Hello again!", "Out of curiosity,", "Be straight with me:", "Good evening.", "Ok,",
    "I've got a question for you.", "This might sound silly, but",
)

_CLOSERS: tuple[str, ...] = (
    "Thanks!", "Any ideas?", "Be specific.", "Thank you.", "Please keep it short.", "I'd love your take.",
    "What do you reckon?", "Cheers.", "Be honest.", "I'm curious.", "Thanks in advance.", "No pressure.",
    "Just give me your gut feeling.", "Appreciate it!", "Looking forward to your answer.", "Keep it simple, please.",
    "Tell me straight.", "A sentence or two is fine.", "Thanks a lot.",
)

_FRAMES: dict[str, tuple[str, ...]] = {
    "how_to": ("A good way to start is to {idea}.", "The simplest approach is to {idea}.",
               "Start small and {idea}.", "What works for most people is to {idea}.", "Try to {idea}.",
               "My advice would be to {idea}."),
    "recommend": ("I would suggest that you {idea}.", "My recommendation is to {idea}.", "You could {idea}.",
                  "One idea is to {idea}.", "Why not {idea}?", "If I were you, I would {idea}."),
    "opinion": ("Honestly, I think {view}.", "In my view, {view}.", "I would say {view}.",
                "My honest take is that {view}.", "I tend to think {view}.", "Personally, I feel {view}."),
    "explain": ("The short answer is that {view}.", "Mostly, {view}.", "A big part of it is that {view}.",
                "Put simply, {view}.", "As I understand it, {view}."),
    "tell": ("One thing worth knowing is that {view}.", "What stands out to me is that {view}.",
             "Happily, there is a lot to say, but the heart of it is that {view}.", "Here is my take: {view}."),
    "feeling": ("It might help to {idea}.", "One small step is to {idea}.", "When that happens, try to {idea}.",
                "Be gentle with yourself and {idea}."),
    "situation": ("It may help to {idea}.", "A sensible next step is to {idea}.", "Try to {idea}.",
                  "I would {idea}."),
    "hypothetical": ("If I could, I would {dream}.", "I think I would {dream}.", "Given the chance, I would {dream}.",
                     "My first choice would be to {dream}.", "I would probably {dream}."),
    "list": ("A few that come to mind are {m}, {m2} and {m3}.", "You could start with {m}, {m2} and {m3}.",
             "Here are three: {m}, {m2} and {m3}.", "I would pick {m}, {m2} and {m3}."),
    "choice": ("Both are good, but I would lean toward {pick}.", "I would choose {pick}, at least to begin with.",
               "It depends on you, but {pick} is a safe first pick.", "If I had to pick one, it would be {pick}."),
}

_LIST_IDEA_FRAMES: tuple[str, ...] = (
    "Here are a couple. First, {idea}. Second, {idea2}.", "To start, {idea}. After that, {idea2}.",
    "Two good ones: {idea}, and {idea2}.",
)

_ACKS: dict[str, tuple[str, ...]] = {
    "feeling": ("I'm sorry you are feeling {emotion}.", "Feeling {emotion} is more common than you might think.",
                "That sounds hard, and it makes sense to feel that way.", "Thank you for telling me how you feel.",
                "I hear you, that is a lot to carry."),
    "situation": ("That sounds like a tricky situation.", "I'm sorry you are dealing with that.",
                  "That is a common problem, and it can be handled.", "Thanks for explaining the situation."),
    "choice": ("Good question.", "Nice dilemma to have.", "Tough one."),
    "hypothetical": ("What a fun question.", "I love this kind of question.", "Ooh, good one."),
}

_ENDINGS: tuple[str, ...] = (
    "I hope that helps.", "Give it a try and see how it feels.", "Small steps add up over time.",
    "There is no single right answer, though.", "Take it one step at a time.",
    "Be patient with yourself along the way.", "It is worth experimenting to find what suits you.",
    "Let me know how it goes.",
)

_MAX_WORDS = 60
_MIN_WORDS = 15
_FORMATTER = string.Formatter()


def template_families() -> tuple[str, ...]:
    """All template-family ids, train and held-out, as "topic/pattern"."""
    return tuple(f"{topic}/{pattern}" for topic, data in _TOPIC_DATA.items() for pattern in data.families)


def _family_templates(family: str) -> tuple[str, ...]:
    """The question templates of one family id."""
    topic, pattern = family.split("/")
    return _TOPIC_DATA[topic].families[pattern]


def _fields(template: str) -> tuple[str, ...]:
    """The slot names a template refers to, in order."""
    return tuple(name for _, name, _, _ in _FORMATTER.parse(template) if name)


def _slot_values(rng: random.Random) -> dict[str, str]:
    """Draw three distinct values per slot list, stored as `name`, `name2` and `name3`."""
    values: dict[str, str] = {}
    for name, options in _SLOTS.items():
        first, second, third = rng.sample(options, 3)
        values[name], values[name + "2"], values[name + "3"] = first, second, third
    return values


def _fill(template: str, values: dict[str, str]) -> str:
    """Fill a template's slots and turn "a" into "an" before a vowel sound."""
    return re.sub(r"\b([Aa]) (?=[aeioAEIO])", r"\1n ", template.format_map(values))


def _lower_first(text: str) -> str:
    """Lower-case the first letter unless the text starts with the pronoun I."""
    if re.match(r"I\b", text):
        return text
    return text[:1].lower() + text[1:]


def _dress_question(rng: random.Random, core: str) -> str:
    """Add an optional opener and closer and vary the register."""
    text = core
    if rng.random() < 0.45:
        opener = rng.choice(_OPENERS)
        text = f"{opener} {_lower_first(text) if opener[-1] in ',:' or opener[-1].isalpha() else text}"
    if rng.random() < 0.35:
        text = f"{text} {rng.choice(_CLOSERS)}"
    elif rng.random() < 0.1:
        text = text.rstrip("?")
    if rng.random() < 0.12:
        text = text.lower()
    return text


def _words(parts: list[str]) -> int:
    """Total word count of the answer sentences."""
    return sum(len(p.split()) for p in parts)


def _pick(rng: random.Random, options: tuple[str, ...], template: str) -> str:
    """Choose an answer part, usually one mentioning a slot the question mentions."""
    asked = set(_fields(template))
    related = [o for o in options if asked & set(_fields(o))]
    return rng.choice(related if related and rng.random() < 0.75 else options)


def _lead(rng: random.Random, topic: _Topic, pattern: str, template: str, values: dict[str, str]) -> str:
    """The main answer sentence: a pattern frame filled with topic content."""
    if pattern == "list" and topic.list_slot is None:
        idea, idea2 = rng.sample(topic.ideas, 2)
        return rng.choice(_LIST_IDEA_FRAMES).format(idea=idea, idea2=idea2)
    frame = rng.choice(_FRAMES[pattern])
    slot = topic.list_slot or "activity"
    return frame.format(
        idea=_pick(rng, topic.ideas, template), view=_pick(rng, topic.views, template),
        dream=_pick(rng, topic.dreams or topic.ideas, template),
        m=values[slot], m2=values[slot + "2"], m3=values[slot + "3"], pick=values["pick"],
    )


def _compose_answer(rng: random.Random, topic: _Topic, pattern: str, template: str, values: dict[str, str]) -> str:
    """Compose a relevant 1-3 sentence prose answer sharing the question's slot values."""
    acks = tuple(a for a in _ACKS.get(pattern, ()) if "{emotion}" not in a or "{emotion}" in template)
    ack = [rng.choice(acks)] if acks and rng.random() < 0.6 else []
    supports = list(topic.supports)
    rng.shuffle(supports)
    parts = ack + [_lead(rng, topic, pattern, template, values), supports.pop()]
    if rng.random() < 0.3:
        parts.append(rng.choice(_ENDINGS))
    while _words(parts) < _MIN_WORDS and supports:
        parts.append(supports.pop())
    while _words(parts) > _MAX_WORDS and len(parts) > 2:
        parts.pop(0 if ack and parts[0] == ack[0] else -1)
    text = " ".join(_fill(p, values) for p in parts)
    return text[:1].upper() + text[1:]


def _choice_pick(rng: random.Random, template: str, values: dict[str, str]) -> str:
    """The option a "choice" answer goes for: one of the two values the question offers."""
    paired = [name[:-1] for name in _fields(template) if name.endswith("2") and name[:-1] in _SLOTS]
    if not paired:
        return values["activity"]
    base = paired[0]
    article = re.search(r"\b(a|an|the) \{" + base + r"2\}", template)
    prefix = article.group(1) + " " if article else ""
    return prefix + rng.choice((values[base], values[base + "2"]))


def _draw(rng: random.Random, family: str) -> ProseItem:
    """One item from a given family."""
    topic_name, pattern = family.split("/")
    topic = _TOPIC_DATA[topic_name]
    template = rng.choice(topic.families[pattern])
    values = _slot_values(rng)
    values["pick"] = _choice_pick(rng, template, values)
    core = _fill(template, values)
    question = _dress_question(rng, core)
    answer = _compose_answer(rng, topic, pattern, template, values)
    return ProseItem(question=question, answer=answer, topic=topic_name, template_family=family)


def _norm(text: str) -> str:
    """Case-, space- and end-punctuation-insensitive key of a string."""
    return " ".join(text.lower().split()).rstrip("?.! ")


@functools.cache
def _train_core_keys() -> frozenset[str]:
    """Normalised keys of every core question reachable from a training family."""
    keys: set[str] = set()
    for family in template_families():
        if family_split(family) != "train":
            continue
        for template in _family_templates(family):
            names = sorted(set(_fields(template)))
            pools = [_SLOTS[n[:-1] if n not in _SLOTS else n] for n in names]
            for combo in itertools.product(*pools):
                keys.add(_norm(_fill(template, dict(zip(names, combo)))))
    return frozenset(keys)


def _could_be_train(question: str) -> bool:
    """Whether some opener, train core and closer could spell this exact question."""
    key = _norm(question)
    cores = _train_core_keys()
    heads = [""] + [_norm(o) for o in _OPENERS if key.startswith(_norm(o))]
    tails = [""] + [_norm(c) for c in _CLOSERS if key.endswith(_norm(c))]
    for head in heads:
        for tail in tails:
            if len(head) + len(tail) > len(key):
                continue
            middle = key[len(head):len(key) - len(tail)] if tail else key[len(head):]
            if _norm(middle) in cores:
                return True
    return False


def generate_prose(rng: random.Random, n: int, split: str = "train") -> list[ProseItem]:
    """n items from the families of one split (see `family_split`); deterministic given rng.

    Validation and held-out questions never coincide with a question a training family could produce."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    heldout = split != "train"
    families = tuple(f for f in template_families() if family_split(f) == split)
    seen: set[str] = set()
    items: list[ProseItem] = []
    for _ in range(n):
        for attempt in range(64):
            item = _draw(rng, rng.choice(families))
            if heldout and _could_be_train(item.question):
                continue
            if item.question not in seen or attempt >= 8:
                break
        else:
            raise RuntimeError("could not draw a held-out question distinct from every training question")
        seen.add(item.question)
        items.append(item)
    return items


def corpus_stats() -> dict[str, int]:
    """Counts describing the generator's breadth."""
    families = template_families()
    return {
        "topics": len(TOPICS),
        "families": len(families),
        "heldout_families": len(HELDOUT_FAMILIES),
        "validation_families": len(VALIDATION_FAMILIES),
        "templates": sum(len(_family_templates(f)) for f in families),
        "heldout_templates": sum(len(_family_templates(f)) for f in HELDOUT_FAMILIES),
        "patterns": len({f.split("/")[1] for f in families}),
        "openers": len(_OPENERS),
        "closers": len(_CLOSERS),
        "slot_lists": len(_SLOTS),
        "answer_sentences": sum(len(t.ideas) + len(t.views) + len(t.supports) + len(t.dreams)
                                for t in _TOPIC_DATA.values()),
    }
